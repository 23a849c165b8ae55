"""Which API a connection test calls (#21): embeddings for a connection that makes embeddings
and whose model is an embedding model or the model it serves to a workspace's embedding role;
chat otherwise; `"endpoint"` chooses. The result says which endpoint was called."""

from __future__ import annotations

import pytest

from connections import diagnostics
from tests.conftest import UPSTREAM_KEY
from tests.factories import ConnectionFactory
from workspaces.services import workspace_create

pytestmark = pytest.mark.django_db


def _run(conn, **kwargs):
    test = diagnostics.connection_test_request(connection=conn, **kwargs)
    diagnostics.connection_test_run(test_id=test.pk)
    test.refresh_from_db()
    return test


def _conn(upstream, model, **kwargs):
    return ConnectionFactory(name=f"c-{model}", base_url=upstream.openai_url,
                             default_model=model, secrets={"api_key": UPSTREAM_KEY}, **kwargs)


@pytest.mark.parametrize("model,path", [("test-embedding", "/v1/embeddings"),
                                        ("text-embedding-3-small", "/v1/embeddings"),
                                        ("test-model", "/v1/chat/completions")])
def test_the_model_decides_by_default(upstream, model, path):
    test = _run(_conn(upstream, model))
    assert test.status == "succeeded", test.message
    assert upstream.last_request.path == path
    assert test.endpoint == ("embeddings" if "embeddings" in path else "chat")
    assert path.removeprefix("/v1") in test.message


def test_a_connection_serving_the_embedding_role_is_tested_with_embeddings(upstream):
    upstream.models.append("nomic-bert")  # a name that says nothing
    conn = _conn(upstream, "nomic-bert")
    assert _run(conn).endpoint == "chat"
    workspace_create(name="Search", bindings={"embedding": {"connection": str(conn.pk)}})
    test = _run(conn)
    assert (test.status, test.endpoint) == ("succeeded", "embeddings")
    assert upstream.last_request.path == "/v1/embeddings"


@pytest.mark.parametrize("asked", ["chat", "embeddings"])
def test_endpoint_can_be_chosen(upstream, asked):
    test = _run(_conn(upstream, "test-embedding"), endpoint=asked)
    assert test.endpoint == asked
    assert upstream.last_request.path == ("/v1/embeddings" if asked == "embeddings"
                                          else "/v1/chat/completions")


def test_api_takes_endpoint_and_refuses_others(staff_client, upstream, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    conn = _conn(upstream, "test-model")
    response = staff_client.post(f"/api/v1/connections/{conn.pk}/test/",
                                 {"endpoint": "embeddings"}, format="json")
    assert response.status_code == 202, response.content
    assert staff_client.post(f"/api/v1/connections/{conn.pk}/test/", {"endpoint": "images"},
                             format="json").status_code == 400
    unsaved = staff_client.post("/api/v1/connection-tests/", {
        "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": upstream.openai_url,
        "model": "test-model", "endpoint": "embeddings",
        "credentials": {"api_key": UPSTREAM_KEY}}, format="json")
    assert unsaved.status_code == 202, unsaved.content
    assert "endpoint" in unsaved.json()


def test_a_chat_only_provider_is_tested_with_chat(upstream):
    conn = ConnectionFactory(name="claude", provider="anthropic", auth_method="api_key",
                             base_url=upstream.anthropic_url, default_model="claude-haiku-4-5",
                             secrets={"api_key": UPSTREAM_KEY})
    assert diagnostics.test_endpoint(connection=conn, provider="anthropic",
                                     model="voyage-embed-3") == "chat"
    assert _run(conn).endpoint == "chat"
