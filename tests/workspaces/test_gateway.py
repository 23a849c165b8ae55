"""The /v1 gateway in-process (Django's ASGI request path, real litellm, fake upstreams)."""

from __future__ import annotations

import base64
import json
import logging
import struct

import pytest
from asgiref.sync import async_to_sync

from connections.models import DiscoveredModel
from connections.services import connection_update
from tests.conftest import CANARY, UPSTREAM_KEY
from workspaces.models import UsageRecord, WorkspaceAPIKey
from workspaces.services import api_key_revoke, workspace_update

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


@pytest.fixture
def setup(upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, name="primary")
    ws = make_workspace("Alpha", chat=conn, agent=(conn, "test-model-large"),
                        embedding=(conn, "test-embedding"))
    return {"up": upstream, "conn": conn, "ws": ws, "key": make_key(ws)}


def test_chat_by_role_reaches_the_bound_upstream_and_records_usage(gateway, setup):
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello from upstream."
    assert response["x-llmconn-connection"] == "primary"
    sent = setup["up"].last_request
    assert sent.key == UPSTREAM_KEY
    assert sent.body["model"] == "test-model"
    record = UsageRecord.objects.get()
    assert (record.workspace_id, record.role, record.model, record.status_code) == (
        setup["ws"].pk, "chat", "test-model", 200)
    assert record.input_tokens > 0 and record.output_tokens > 0
    assert str(record.connection_id) == str(setup["conn"].pk)
    assert record.api_key.last_used_at is not None


def test_agent_role_uses_its_model_override(gateway, setup):
    gateway.post(CHAT, setup["key"], {"model": "agent", "messages": HELLO})
    assert setup["up"].last_request.body["model"] == "test-model-large"


def test_model_offered_by_the_bound_connection_can_be_named(gateway, setup):
    from django.utils import timezone

    DiscoveredModel.objects.create(connection=setup["conn"], model_id="gpt-4o-mini",
                                   discovered_at=timezone.now())
    workspace_update(workspace=setup["ws"], name="Alpha")  # any change; discovery bumps too
    response = gateway.post(CHAT, setup["key"], {"model": "gpt-4o-mini", "messages": HELLO})
    assert response.status_code == 200, response.content
    assert setup["up"].last_request.body["model"] == "gpt-4o-mini"
    record = UsageRecord.objects.get()
    assert record.model == "gpt-4o-mini"
    # litellm knows gpt-4o-mini's price when served by an OpenAI-compatible server
    assert record.cost is None or record.cost > 0


def test_unknown_model_is_404_in_openai_format(gateway, setup):
    response = gateway.post(CHAT, setup["key"], {"model": "no-such-model", "messages": HELLO})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_streaming_sends_sse_chunks_then_done_and_records_tokens(gateway, setup):
    response, events = gateway.stream(CHAT, setup["key"],
                                      {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from upstream."
    assert not any("usage" in c for c in chunks)  # not asked for
    record = UsageRecord.objects.get()
    assert record.stream and record.status_code == 200 and record.output_tokens > 0


def test_streaming_with_include_usage_ends_with_a_usage_chunk(gateway, setup):
    _, events = gateway.stream(CHAT, setup["key"], {
        "model": "chat", "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": True}})
    last = json.loads(events[-2])
    assert last["usage"]["completion_tokens"] > 0
    assert last["choices"] == []


@pytest.mark.parametrize("anthropic", [False, True], ids=["openai-style", "anthropic-style"])
def test_tool_calls_come_back_in_openai_shape(gateway, upstream, make_connection,
                                              make_workspace, make_key, anthropic):
    conn = make_connection(upstream, anthropic=anthropic)
    ws = make_workspace("Tools", chat=conn)
    response = gateway.post(CHAT, make_key(ws), {"model": "chat", "messages": HELLO,
                                                 "tools": TOOLS})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "test"}
    if anthropic:  # the Anthropic-style upstream got Anthropic's tool format
        assert upstream.last_request.path == "/anthropic/v1/messages"
        assert upstream.last_request.body["tools"][0]["input_schema"]["required"] == ["city"]


def test_system_prompt_goes_where_the_provider_expects_it(gateway, upstream, make_connection,
                                                          make_workspace, make_key):
    ws = make_workspace("Claude", chat=make_connection(upstream, anthropic=True))
    gateway.post(CHAT, make_key(ws), {"model": "chat", "messages": [
        {"role": "system", "content": "Be brief."}, *HELLO]})
    body = upstream.last_request.body
    assert "Be brief." in json.dumps(body["system"])
    assert all(m["role"] != "system" for m in body["messages"])


def test_embeddings_as_floats_and_base64(gateway, setup):
    response = gateway.post("/v1/embeddings", setup["key"],
                            {"model": "embedding", "input": ["a", "b"]})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert len(data) == 2 and len(data[0]["embedding"]) == 8
    assert setup["up"].last_request.body["model"] == "test-embedding"
    b64 = gateway.post("/v1/embeddings", setup["key"], {
        "model": "embedding", "input": "a", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert decoded == pytest.approx(data[0]["embedding"], abs=1e-4)
    assert UsageRecord.objects.filter(endpoint="embeddings").count() == 2


def test_models_lists_roles_then_connection_models(gateway, setup):
    response = gateway.get("/v1/models", setup["key"])
    assert response.status_code == 200
    ids = [m["id"] for m in response.json()["data"]]
    assert ids[:3] == ["chat", "agent", "embedding"]
    assert {"test-model", "test-model-large", "test-embedding"} <= set(ids)
    assert gateway.get("/v1/models/chat", setup["key"]).json()["id"] == "chat"
    assert gateway.get("/v1/models/nope", setup["key"]).status_code == 404


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key", "extra_headers",
                                   "headers", "custom_llm_provider", "api_version",
                                   "mock_response", "extra_body"])
def test_fields_that_would_redirect_a_call_are_400(gateway, setup, field):
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO,
                                                 field: "http://evil.example/v1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "forbidden_parameter"
    assert setup["up"].request_count == 0


@pytest.mark.parametrize("body", [
    {"model": "chat"},
    {"model": "chat", "messages": []},
    {"model": "chat", "messages": "hi"},
    {"messages": HELLO},
    {"model": "chat", "messages": HELLO, "temperature": "hot"},
    {"model": "chat", "messages": HELLO, "max_tokens": True},
])
def test_malformed_requests_are_400(gateway, setup, body):
    response = gateway.post(CHAT, setup["key"], body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]


def test_non_json_body_is_400(gateway, setup):
    response = gateway.post_raw(CHAT, b"{not json", setup["key"])
    assert response.status_code == 400


@pytest.mark.parametrize("header", [None, "Bearer lck_unknown", "Bearer sk-other",
                                    "Basic abc", "Bearer "])
def test_missing_or_unknown_key_is_401(gateway, setup, header):
    headers = {"Authorization": header} if header is not None else {}
    response = gateway.post(CHAT, None, {"model": "chat", "messages": HELLO}, **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    assert setup["up"].request_count == 0


def test_revoked_key_is_refused_on_the_next_call(gateway, setup):
    assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    api_key_revoke(api_key=WorkspaceAPIKey.objects.get())
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_key_reaches_only_its_own_workspace(gateway, upstream_factory, make_connection,
                                              make_workspace, make_key):
    up_a = upstream_factory(name="a", api_keys={"key-a-0000000000000"})
    up_b = upstream_factory(name="b", api_keys={"key-b-0000000000000"}, models=["only-b"])
    ws_a = make_workspace("A", chat=make_connection(up_a, key="key-a-0000000000000"))
    make_workspace("B", chat=make_connection(up_b, key="key-b-0000000000000",
                                             default_model="only-b"))
    key_a = make_key(ws_a)
    response = gateway.post(CHAT, key_a, {"model": "only-b", "messages": HELLO})
    assert response.status_code == 404
    assert "only-b" not in [m["id"] for m in gateway.get("/v1/models", key_a).json()["data"]]
    assert up_b.request_count == 0


def test_two_workspaces_on_two_connections_of_one_provider_chat_concurrently(
        upstream_factory, make_connection, make_workspace, make_key):
    import asyncio

    from tests.asgi_client import AsgiClient

    up1 = upstream_factory(name="one", api_keys={"sk-one-111111111111"})
    up2 = upstream_factory(name="two", api_keys={"sk-two-222222222222"})
    key1 = make_key(make_workspace("One", chat=make_connection(up1, key="sk-one-111111111111")))
    key2 = make_key(make_workspace("Two", chat=make_connection(up2, key="sk-two-222222222222")))

    async def call(key):
        response = await AsgiClient().post(
            CHAT, data=json.dumps({"model": "chat", "messages": HELLO}),
            headers={"Authorization": f"Bearer {key}"})
        await response.aread()
        return response

    async def both():
        return await asyncio.gather(*[call(k) for _ in range(5) for k in (key1, key2)])

    responses = async_to_sync(both)()
    assert all(r.status_code == 200 for r in responses)
    texts = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert texts.count("Hello from one.") == 5 and texts.count("Hello from two.") == 5
    assert set(up1.keys_seen()) == {"sk-one-111111111111"}
    assert set(up2.keys_seen()) == {"sk-two-222222222222"}


def test_editing_the_connection_key_is_used_by_the_next_call(gateway, setup):
    up = setup["up"]
    up.api_keys.add("sk-rotated-key-0002")
    assert gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    connection_update(connection=setup["conn"], credentials={"api_key": "sk-rotated-key-0002"})
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert up.keys_seen() == [UPSTREAM_KEY, "sk-rotated-key-0002"]


def test_rebinding_a_role_is_used_by_the_next_call(gateway, setup, upstream_factory,
                                                   make_connection):
    other = upstream_factory(name="other", api_keys={"sk-other-00000000"})
    conn2 = make_connection(other, key="sk-other-00000000")
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    workspace_update(workspace=setup["ws"], bindings={"chat": {"connection": str(conn2.pk)}})
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.json()["choices"][0]["message"]["content"] == "Hello from other."


def test_deactivated_connection_is_a_503_not_a_call(gateway, setup):
    connection_update(connection=setup["conn"], is_active=False)
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "connection_inactive"
    assert setup["up"].request_count == 0


# --- provider errors --------------------------------------------------------------------------

@pytest.mark.parametrize("mode,status,code,retry", [
    (401, 502, "provider_auth_failed", False),
    (429, 429, "rate_limit_exceeded", True),  # the provider's own code
    (500, 502, "server_error", True),
    ("bad_json", 502, "provider_error", True),
])
def test_provider_errors_come_back_in_openai_format_saying_whose_they_are(
        gateway, setup, mode, status, code, retry):
    setup["up"].set_mode(mode)
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert "provider" in error["message"].lower()
    assert (response.get("x-should-retry") != "false") is retry
    assert UsageRecord.objects.get().status_code == status
    if mode == 429:
        assert response.has_header("Retry-After")


def test_provider_401_during_a_stream_request_is_502_before_streaming(gateway, setup):
    setup["up"].set_mode(401)
    response, _ = gateway.stream(CHAT, setup["key"],
                                 {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_auth_failed"


def test_unreachable_provider_is_502(gateway, setup, closed_port_url):
    connection_update(connection=setup["conn"], base_url=closed_port_url,
                      credentials={"api_key": UPSTREAM_KEY})
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_unreachable"


def test_egress_policy_blocks_private_endpoints(gateway, setup, settings):
    settings.LLMCONN_EGRESS_ALLOW = []
    response = gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "provider_blocked"
    assert setup["up"].request_count == 0


def test_canary_key_never_in_responses_or_logs(gateway, upstream_factory, make_connection,
                                               make_workspace, make_key, caplog):
    caplog.set_level(logging.DEBUG)
    up = upstream_factory(name="canary", api_keys={CANARY})
    ws = make_workspace("Canary", chat=make_connection(up, key=CANARY),
                        embedding=(make_connection(up, key=CANARY), "test-embedding"))
    key = make_key(ws)
    bodies = []
    for mode in ("ok", "echo_key", 401, 500):
        up.set_mode(mode, status=400 if mode == "echo_key" else None)
        bodies.append(gateway.post(CHAT, key, {"model": "chat", "messages": HELLO}).content)
        bodies.append(gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                                 "stream": True})[0].content
                      if mode != "ok" else b"")
        bodies.append(gateway.post("/v1/embeddings", key, {"model": "embedding",
                                                           "input": "x"}).content)
    bodies.append(gateway.get("/v1/models", key).content)
    assert CANARY in up.keys_seen()  # the key really was used
    for body in bodies:
        assert CANARY not in body.decode()
    assert CANARY not in caplog.text
    assert not any(CANARY in str(v) for v in UsageRecord.objects.values())


def test_oauth_connection_calls_with_a_fetched_token(gateway, upstream, make_connection,
                                                     make_workspace, make_key):
    from connections.services import connection_create

    conn = connection_create(
        name="oauth", provider="openai_compatible", auth_method="oauth_client_credentials",
        base_url=upstream.openai_url, default_model="test-model",
        config={"token_url": upstream.token_url, "client_id": "test-client"},
        credentials={"client_secret": "test-client-secret-0001"})
    key = make_key(make_workspace("OAuth", chat=conn))
    for _ in range(2):
        response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
        assert response.status_code == 200, response.content
    assert upstream.tokens_issued == 1  # cached between calls
    assert upstream.last_request.key.startswith("tok-")


def test_a_promoted_secret_rotation_is_used_by_the_next_call(gateway, setup):
    from connections.secret_rotation import connection_rotate_secret

    up = setup["up"]
    up.api_keys.add("sk-rotated-by-staging-03")
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    outcome = connection_rotate_secret(connection=setup["conn"],
                                       credentials={"api_key": "sk-rotated-by-staging-03"})
    assert outcome.promoted
    gateway.post(CHAT, setup["key"], {"model": "chat", "messages": HELLO})
    assert up.last_request.key == "sk-rotated-by-staging-03"
