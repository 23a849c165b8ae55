"""The lean /v1 path replaces a database connection that broke under a call at once (issue 22):
the next call opens a fresh one instead of failing on the closed one for up to a second."""

from __future__ import annotations

import time

import httpx
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections

from llmconn.asgi import application


@pytest.mark.django_db(transaction=True)
def test_a_call_that_failed_for_the_database_closes_the_broken_connection_at_once(
        monkeypatch, caplog):
    seen = {}

    def query_on_a_dead_connection():
        conn = connections["default"]
        conn.ensure_connection()
        conn.connection.close()  # as after a PostgreSQL restart: the socket is gone
        seen["conn"] = conn
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")

    async def view(request, **kwargs):
        await sync_to_async(query_on_a_dead_connection)()

    monkeypatch.setattr(application, "route", lambda path: (view, {}))
    application._last_db_check = time.monotonic()  # the once-a-second check is not due

    async def call():
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post("/v1/chat/completions", json={})

    response = async_to_sync(call)()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert seen["conn"].connection is None  # closed: the next use opens a fresh one
    assert "Traceback" not in caplog.text
    with connections["default"].cursor() as cursor:  # and it does
        cursor.execute("SELECT 1")
