"""People and defaults across processes: a change made here reaches the gateway served by
uvicorn in another process on its next call (shared revision stamp). Needs PostgreSQL and
Redis, as tests/workspaces/test_live_server.py."""

from __future__ import annotations

import openai
import pytest
from django.contrib.auth import get_user_model

from connections.services import connection_set_default
from tests.conftest import UPSTREAM_KEY
from workspaces import services

from .conftest import require_shared_cache

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]


def _answered_by(base: str, key: str) -> str:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
    return raw.headers["x-llmconn-connection"]


def test_set_default_reaches_a_provider_binding_in_another_process(
        gateway_server, upstream_factory, make_connection, make_workspace, make_key):
    require_shared_cache()
    up = upstream_factory(name="legacy", api_keys={UPSTREAM_KEY})
    first, second = make_connection(up, name="first"), make_connection(up, name="second")
    connection_set_default(connection=first)
    ws = make_workspace("Legacy")
    services.workspace_update(workspace=ws, bindings={"chat": {"provider": "openai_compatible"}})
    key = make_key(ws)
    assert _answered_by(gateway_server[0], key) == "first"
    connection_set_default(connection=second)
    assert _answered_by(gateway_server[0], key) == "second"


def test_a_users_default_change_reaches_their_key_in_another_process(
        gateway_server, upstream_factory, make_connection):
    require_shared_cache()
    up = upstream_factory(name="mine", api_keys={UPSTREAM_KEY})
    shared, other = make_connection(up, name="shared"), make_connection(up, name="other")
    services.system_default_set(role="chat", connection=shared)
    user = get_user_model().objects.create_user("carol", password="pw-carol-12345")
    _, raw = services.personal_api_key_create(user=user)
    assert _answered_by(gateway_server[0], raw) == "shared"
    services.user_default_set(user=user, role="chat", connection=str(other.pk))
    assert _answered_by(gateway_server[0], raw) == "other"
