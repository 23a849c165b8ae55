"""Targeted invalidation across processes: the gateway in another process (uvicorn) sees each
kind of edit made here on its next call, and keeps its cached resolution across an edit that
does not concern it.

Needs PostgreSQL (the server shares the test database) and Redis (the versions of the cache
scopes, llmconn/versions.py). CI provides both.
"""

from __future__ import annotations

import openai
import pytest

from connections.models import Connection
from connections.services import connection_update
from llmconn import versions
from workspaces.services import system_default_set, workspace_update

from .conftest import require_shared_cache

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]


def sdk(gateway_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_server[0]}/v1", api_key=key, max_retries=0,
                         timeout=30)


@pytest.fixture
def setup(upstream_factory, make_connection, make_workspace, make_key):
    require_shared_cache()
    up = upstream_factory(name="one", api_keys={"sk-one-000000000001"},
                          models=["m1", "m2", "m3"])
    own = make_connection(up, key="sk-one-000000000001", name="own", default_model="m1")
    other = make_connection(up, key="sk-one-000000000001", name="other", default_model="m2")
    ws = make_workspace("Live", chat=own)
    return {"up": up, "own": own, "other": other, "ws": ws, "key": make_key(ws)}


def _model_sent(setup) -> str:
    return setup["up"].last_request.body["model"]


def test_an_unrelated_edit_leaves_the_other_process_cache_in_place(gateway_server, setup):
    client = sdk(gateway_server, setup["key"])
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m1"
    # The row changes without any service (nothing bumped): the other process keeps its entry...
    Connection.objects.filter(pk=setup["own"].pk).update(default_model="m3")
    # ... also across an edit of another connection and of another workspace ...
    connection_update(connection=setup["other"], default_model="m3")
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m1"
    # ... until the version of its own connection moves.
    versions.bump_connections(setup["own"].pk)
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m3"


def test_a_binding_edit_reaches_the_other_process_next_call(gateway_server, setup):
    client = sdk(gateway_server, setup["key"])
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m1"
    workspace_update(workspace=setup["ws"],
                     bindings={"chat": {"connection": str(setup["other"].pk)}})
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m2"


def test_a_system_default_edit_reaches_the_other_process_next_call(gateway_server, setup):
    system_default_set(role="agent", connection=str(setup["own"].pk))
    client = sdk(gateway_server, setup["key"])
    client.chat.completions.create(model="agent", messages=HELLO)
    assert _model_sent(setup) == "m1"
    system_default_set(role="agent", connection=str(setup["other"].pk))
    client.chat.completions.create(model="agent", messages=HELLO)
    assert _model_sent(setup) == "m2"


def test_a_connection_edit_reaches_the_other_process_next_call(gateway_server, setup):
    client = sdk(gateway_server, setup["key"])
    client.chat.completions.create(model="chat", messages=HELLO)
    connection_update(connection=setup["own"], default_model="m2")
    client.chat.completions.create(model="chat", messages=HELLO)
    assert _model_sent(setup) == "m2"
