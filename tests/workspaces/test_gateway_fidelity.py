"""Gateway fidelity (#15): fields forwarded as sent, only the contract's fields refused, the
provider's own error explanations, x-request-id / x-should-retry, body limits and deep JSON,
/v1/models, embeddings only where a provider can make them."""

from __future__ import annotations

import json

import pytest

from llmconn.errors import ValidationFailed
from tests.conftest import CANARY
from workspaces.gateway.request import FORBIDDEN_FIELDS
from workspaces.models import UsageRecord
from workspaces.services import system_default_set, workspace_update

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
HELLO = [{"role": "user", "content": "Hello"}]

EXTENSIONS = {
    "min_p": 0.05, "top_k": 40, "repetition_penalty": 1.1,
    "chat_template_kwargs": {"enable_thinking": False}, "guided_json": {"type": "object"},
    "reasoning": {"effort": "low", "exclude": True}, "thinking": {"type": "disabled"},
    "keep_alive": "5m", "prompt_cache_retention": "24h", "store": True,
    "metadata": {"team": "search"}, "temperature": 1.0, "seed": 7,
}


@pytest.fixture
def setup(upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, name="primary")
    ws = make_workspace("Alpha", chat=conn, embedding=(conn, "test-embedding"))
    return {"up": upstream, "conn": conn, "ws": ws, "key": make_key(ws)}


@pytest.fixture
def claude(upstream, make_connection, make_workspace, make_key):
    ws = make_workspace("Claude", chat=make_connection(upstream, anthropic=True, name="claude"))
    return make_key(ws)


# --- forward, don't filter ----------------------------------------------------------------------

def test_provider_extensions_reach_an_openai_wire_upstream_unchanged(gateway, setup):
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO,
                                                 **EXTENSIONS})
    assert response.status_code == 200, response.content
    sent = setup["up"].last_request.body
    for name, value in EXTENSIONS.items():
        assert sent[name] == value, name
    assert sent["messages"] == HELLO and sent["model"] == "test-model"


def test_streamed_request_keeps_the_clients_stream_options(gateway, setup):
    gateway.stream(CHAT, setup["key"], {"model": "chat", "messages": HELLO, "stream": True,
                                        "min_p": 0.1,
                                        "stream_options": {"include_obfuscation": False}})
    sent = setup["up"].last_request.body
    assert sent["min_p"] == 0.1 and sent["stream"] is True
    assert sent["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_embedding_extensions_and_encoding_format_are_forwarded(gateway, setup):
    response = gateway.post(EMBED, setup["key"], {
        "model": "embedding", "input": "a", "input_type": "query", "truncate": "END",
        "encoding_format": "base64", "dimensions": 8})
    assert response.status_code == 200, response.content
    sent = setup["up"].last_request.body
    assert (sent["input_type"], sent["truncate"], sent["encoding_format"], sent["dimensions"]) \
        == ("query", "END", "base64", 8)


@pytest.mark.parametrize("field", sorted(FORBIDDEN_FIELDS) + [
    "litellm_params", "azure_ad_token", "vertex_project", "aws_region_name"])
def test_only_the_contracts_fields_are_refused_naming_the_field(gateway, setup, field):
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO,
                                                 field: "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("forbidden_parameter", field)
    assert response["x-should-retry"] == "false"
    assert setup["up"].request_count == 0


def test_forbidden_list_is_the_contracts():
    assert FORBIDDEN_FIELDS == {
        "api_base", "base_url", "api_key", "api_version", "organization", "headers",
        "extra_headers", "extra_body", "extra_query", "custom_llm_provider", "mock_response",
        "client", "max_retries", "timeout"}


def test_litellm_path_maps_what_it_can_and_passes_provider_extensions(gateway, upstream,
                                                                       claude):
    response = gateway.post(CHAT, claude, {"model": "chat", "messages": HELLO, "top_k": 5,
                                           "stop": ["END"], "max_tokens": 20})
    assert response.status_code == 200, response.content
    sent = upstream.last_request.body
    assert upstream.last_request.path == "/anthropic/v1/messages"
    assert sent["top_k"] == 5 and sent["stop_sequences"] == ["END"]


@pytest.mark.parametrize("field,value", [("n", 2), ("metadata", {"a": "b"}),
                                         ("logit_bias", {"1": 1}), ("num_retries", 3),
                                         ("input_cost_per_token", 0.0)])
def test_litellm_path_refuses_what_it_would_drop_naming_field_and_provider(
        gateway, upstream, claude, field, value):
    response = gateway.post(CHAT, claude, {"model": "chat", "messages": HELLO, field: value})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == field
    assert f"`{field}`" in error["message"] and "Anthropic" in error["message"]
    assert response["x-should-retry"] == "false"
    assert upstream.request_count == 0


# --- provider errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_provider_4xx_keeps_its_status_message_and_code(gateway, setup, status):
    setup["up"].set_mode("status", status=status)
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == status
    error = response.json()["error"]
    assert f"Upstream answered {status}." in error["message"]
    assert error["code"] == "upstream_status"
    assert response["x-should-retry"] == "false"


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai-wire", "anthropic"])
def test_a_provider_echoing_the_key_is_answered_with_its_message_scrubbed(
        gateway, upstream_factory, make_connection, make_workspace, make_key, anthropic):
    up = upstream_factory(name="echo", api_keys={CANARY})
    key = make_key(make_workspace("Echo", chat=make_connection(up, key=CANARY,
                                                               anthropic=anthropic)))
    up.set_mode("echo_key", status=400)
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "Incorrect API key provided" in message
    assert CANARY not in response.content.decode()
    up.set_mode("echo_key", status=401)
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 502 and response["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "provider_auth_failed"
    assert CANARY not in response.content.decode()


def test_provider_message_is_bounded(gateway, setup):
    setup["up"].set_mode("status", status=400)
    setup["up"].error_message = "x" * 10_000
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 400
    assert len(response.json()["error"]["message"]) < 2100


def test_provider_timeout_is_504(gateway, setup, settings):
    from connections.services import connection_update

    connection_update(connection=setup["conn"], timeout_seconds=1)
    setup["up"].set_mode("hang")
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "provider_timeout"


# --- headers ------------------------------------------------------------------------------------

def test_every_answer_carries_a_request_id_and_a_clients_own_is_kept(gateway, setup):
    ok = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert ok["x-request-id"].startswith("req_")
    mine = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO},
                        **{"x-request-id": "my-trace-123"})
    assert mine["x-request-id"] == "my-trace-123"
    for response in (gateway.post(CHAT, None, {"model": "chat", "messages": HELLO}),
                     gateway.get("/v1/models", setup["key"]),
                     gateway.get("/v1/nowhere", setup["key"]),
                     gateway.post(EMBED, setup["key"], {"model": "embedding", "input": "a"})):
        assert response["x-request-id"].startswith("req_"), response.content
    streamed, _ = gateway.stream(CHAT, setup["key"], {"model": "chat", "messages": HELLO,
                                                     "stream": True})
    assert streamed["x-request-id"].startswith("req_")
    hostile = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO},
                           **{"x-request-id": "a b\tc" + "x" * 300})
    assert hostile["x-request-id"].startswith("req_")


# --- body limit and malformed JSON --------------------------------------------------------------

def _post_raw(raw: bytes, key: str | None):
    from tests.workspaces.conftest import Gateway

    return Gateway().post_raw(CHAT, raw, key)


DEEP_BUT_VALID = (b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "x": '
                  + b"[" * 150 + b"1" + b"]" * 150 + b"}")


@pytest.mark.parametrize("raw", [b"[" * 5000, b'{"a":' * 5000, b"{" * 200_000, DEEP_BUT_VALID,
                                 b'{"model": "chat", "messages": ', b"\xff\xfe"],
                         ids=["lists", "objects", "braces", "deep-valid", "truncated", "binary"])
@pytest.mark.parametrize("authenticated", [False, True])
def test_malformed_or_deep_json_is_400_before_and_after_auth(setup, raw, authenticated):
    response = _post_raw(raw, setup["key"] if authenticated else None)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "invalid_json"
    assert setup["up"].request_count == 0


def test_body_over_the_limit_is_413_naming_it(setup, settings):
    settings.LLMCONN_MAX_REQUEST_BYTES = 4096
    body = {"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = _post_raw(json.dumps(body).encode(), setup["key"])
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]["message"]
    assert "LLMCONN_MAX_REQUEST_BYTES" in response.json()["error"]["message"]


def test_a_30_mb_body_is_accepted(setup):
    body = {"model": "chat", "messages": [{"role": "user", "content": "x" * (30 * 1024 * 1024)}]}
    response = _post_raw(json.dumps(body).encode(), setup["key"])
    assert response.status_code == 200, response.content[:300]
    assert len(setup["up"].last_request.body["messages"][0]["content"]) == 30 * 1024 * 1024


# --- /v1/models ---------------------------------------------------------------------------------

def test_models_have_a_real_created_time_and_the_provider_as_owner(gateway, setup):
    import time

    data = gateway.get("/v1/models", setup["key"]).json()["data"]
    assert data and all(m["owned_by"] == "openai_compatible" for m in data)
    assert all(time.time() - 3600 < m["created"] <= time.time() + 1 for m in data)
    one = gateway.get("/v1/models/test-model", setup["key"])
    assert one.status_code == 200
    assert one.json()["id"] == "test-model" and one.json()["object"] == "model"


def test_models_created_comes_from_the_providers_listing_when_discovered(gateway, setup):
    from django.utils import timezone

    from connections.models import DiscoveredModel

    DiscoveredModel.objects.create(connection=setup["conn"], model_id="gpt-4o-mini",
                                   discovered_at=timezone.now(),
                                   metadata={"created": 1700000000})
    workspace_update(workspace=setup["ws"], name="Alpha")
    one = gateway.get("/v1/models/gpt-4o-mini", setup["key"]).json()
    assert one["created"] == 1700000000


# --- embeddings: the embedding role, capable connections only -----------------------------------

def test_a_role_name_on_embeddings_means_the_embedding_role(gateway, setup):
    response = gateway.post(EMBED, setup["key"], {"model": "chat", "input": "a"})
    assert response.status_code == 200, response.content
    assert setup["up"].last_request.body["model"] == "test-embedding"
    assert UsageRecord.objects.get().role == "embedding"


def test_binding_a_chat_only_connection_to_embedding_is_400(setup, upstream, make_connection):
    claude = make_connection(upstream, anthropic=True, name="claude-only")
    with pytest.raises(ValidationFailed) as refused:
        workspace_update(workspace=setup["ws"],
                         bindings={"embedding": {"connection": str(claude.pk)}})
    assert refused.value.code == "unsupported_endpoint"
    with pytest.raises(ValidationFailed):
        workspace_update(workspace=setup["ws"], bindings={"embedding": {
            "connection": str(setup["conn"].pk),
            "fallbacks": [{"connection": str(claude.pk), "model": None}]}})
    with pytest.raises(ValidationFailed):
        system_default_set(role="embedding", connection=str(claude.pk))
    workspace_update(workspace=setup["ws"], bindings={"chat": {"connection": str(claude.pk)}})


def test_binding_a_chat_only_connection_through_the_api_is_400(staff_client, setup, upstream,
                                                               make_connection):
    claude = make_connection(upstream, anthropic=True, name="claude-api")
    response = staff_client.patch(f"/api/v1/workspaces/{setup['ws'].slug}/", {
        "bindings": {"embedding": {"connection": str(claude.pk), "model": None}}},
        format="json")
    assert response.status_code == 400
    assert "embeddings" in json.dumps(response.json())


def test_embedding_calls_never_go_to_a_chat_only_default(gateway, upstream, make_connection,
                                                         make_workspace, make_key):
    from workspaces.models import SystemDefault

    claude = make_connection(upstream, anthropic=True, name="claude-default")
    SystemDefault.objects.create(role="embedding", connection=claude)  # as an old row would be
    key = make_key(make_workspace("NoEmbed", chat=claude))
    response = gateway.post(EMBED, key, {"model": "embedding", "input": "a"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_endpoint"
    assert upstream.request_count == 0
