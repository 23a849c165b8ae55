"""The request context reaches audit events under ASGI (async middleware path) too."""

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from audit.models import AuditEvent
from tests.conftest import CANARY


@pytest.mark.django_db(transaction=True)
def test_async_request_records_session_actor_ip_and_user_agent(staff_user):
    async def call():
        client = AsyncClient()
        await client.aforce_login(staff_user)
        return await client.post("/api/v1/connections/",
                                 {"name": "async", "provider": "openai",
                                  "credentials": {"api_key": CANARY}},
                                 content_type="application/json",
                                 headers={"User-Agent": "async-agent/2"})

    r = async_to_sync(call)()
    assert r.status_code == 201, r.content
    event = AuditEvent.objects.get(action="connection.create")
    assert (event.actor_id, event.auth_kind, event.ip, event.user_agent) == (
        staff_user.pk, "session", "127.0.0.1", "async-agent/2")
