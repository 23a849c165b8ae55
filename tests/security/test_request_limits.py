"""Oversize bodies on /api are a 413 in the JSON error shape (issue #16: a 30 MiB body to
/api/v1/connections/ was a 500, RequestDataTooBig). Served by the production entry point."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from rest_framework.authtoken.models import Token

from connections.models import Connection


def _post(path: str, body: bytes, token: str) -> httpx.Response:
    from llmconn.asgi import application

    async def run():
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post(path, content=body, headers={
                "Authorization": f"Token {token}", "Content-Type": "application/json"})

    return asyncio.run(run())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/v1/connections/", "/api/v1/connection-tests/"])
def test_a_30_mib_body_is_a_413_in_the_error_shape(staff_user, path):
    token = Token.objects.create(user=staff_user).key
    body = b'{"name": "' + b"a" * (30 * 1024 * 1024) + b'", "provider": "openai"}'
    response = _post(path, body, token)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "bytes" in error["message"]
    assert not Connection.objects.exists()
