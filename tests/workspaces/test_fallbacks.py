"""Fallback chains through the gateway and the Python client, against two fake upstreams.

The binding's connection (primary) and a fallback each point at their own upstream, so each
upstream's own request count says which connections were reached.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache

from workspaces import calls, services
from workspaces.client import Message, WorkspaceClient
from workspaces.models import UsageRecord

HELLO = [{"role": "user", "content": "Hello"}]
KEY1, KEY2, KEY3 = "sk-primary-000000000001", "sk-fallback-00000000002", "sk-third-0000000000003"


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()  # cool-down flags and failure counts of earlier tests
    yield
    cache.clear()


@pytest.fixture
def chain(upstream_factory, make_connection, make_key):
    """A workspace whose chat role is primary → fallback (→ third), each on its own upstream."""
    up1 = upstream_factory(name="primary", api_keys={KEY1}, hang_s=10)
    up2 = upstream_factory(name="fallback", api_keys={KEY2})
    up3 = upstream_factory(name="third", api_keys={KEY3})
    c1 = make_connection(up1, key=KEY1, name="primary", timeout_seconds=1)
    c2 = make_connection(up2, key=KEY2, name="fallback")
    c3 = make_connection(up3, key=KEY3, name="third")
    ws = services.workspace_create(name="Fallbacks", bindings={
        "chat": {"connection": str(c1.pk), "fallbacks": [
            {"connection": str(c2.pk), "model": None},
            {"connection": str(c3.pk), "model": "test-model-large"}]},
        "embedding": {"connection": str(c1.pk), "model": "test-embedding", "fallbacks": [
            {"connection": str(c2.pk), "model": "test-embedding"}]},
    })
    return {"ups": (up1, up2, up3), "conns": (c1, c2, c3), "ws": ws, "key": make_key(ws)}


def _usage(ws):
    return list(UsageRecord.objects.filter(workspace=ws).order_by("id").values_list(
        "connection__name", "attempt", "status_code", "error_class"))


@pytest.mark.parametrize("mode", [429, 500, "hang", "drop"])
def test_a_retryable_failure_of_the_primary_falls_back_to_the_next_connection(
        gateway, chain, mode):
    up1, up2, up3 = chain["ups"]
    up1.set_mode(mode)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello from fallback."
    assert response.headers["x-llmconn-connection"] == "fallback"
    assert response.headers["x-llmconn-attempt"] == "2"
    assert (up1.request_count, up2.request_count, up3.request_count) == (1, 1, 0)
    error_class = {429: "rate_limited", 500: "provider_error", "hang": "timeout",
                   "drop": "unreachable"}[mode]
    rows = _usage(chain["ws"])
    assert [r[:2] for r in rows] == [("primary", 1), ("fallback", 2)]
    assert rows[0][3] == error_class and rows[1][2:] == (200, "")


def test_the_fallback_model_is_used_and_a_null_model_means_the_connection_default(
        gateway, chain):
    up1, up2, up3 = chain["ups"]
    up1.set_mode(429)
    up2.set_mode("status", status=503)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "third"
    assert up2.last_request.body["model"] == "test-model"  # fallback's default model
    assert up3.last_request.body["model"] == "test-model-large"  # named in the fallback
    assert [r[:3] for r in _usage(chain["ws"])] == [
        ("primary", 1, 429), ("fallback", 2, 503), ("third", 3, 200)]


def test_when_every_candidate_fails_the_last_error_is_answered_naming_its_connection(
        gateway, chain):
    for up in chain["ups"]:
        up.set_mode(429)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"  # the provider's
    assert "connection 'third'" in response.json()["error"]["message"]
    assert response.headers["x-llmconn-connection"] == "third"
    assert response.headers["Retry-After"] == "1"
    assert [up.request_count for up in chain["ups"]] == [1, 1, 1]


@pytest.mark.parametrize("mode,status,code", [
    (401, 502, "provider_auth_failed"),
    ("not_found", 404, "not_found"),  # the provider's own codes (CONTRACT.md)
    (400, 400, "upstream_status"),
])
def test_auth_and_bad_request_failures_do_not_fall_back(gateway, chain, mode, status, code):
    up1, up2, up3 = chain["ups"]
    if mode == 400:
        up1.set_mode("status", status=400)
    else:
        up1.set_mode(mode)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["x-llmconn-connection"] == "primary"
    assert (up2.request_count, up3.request_count) == (0, 0)
    assert _usage(chain["ws"])[0][:3] == ("primary", 1, status)


def test_a_stream_falls_back_before_its_first_byte(gateway, chain):
    up1, up2, _ = chain["ups"]
    up1.set_mode(429)
    response, events = gateway.stream("/v1/chat/completions", chain["key"],
                                      {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "fallback"
    text = "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events if e != "[DONE]")
    assert text == "Hello from fallback."
    assert events[-1] == "[DONE]"
    assert [r[:3] for r in _usage(chain["ws"])] == [("primary", 1, 429), ("fallback", 2, 200)]


def test_a_failure_in_the_middle_of_a_stream_is_reported_not_retried(gateway, chain):
    up1, up2, up3 = chain["ups"]
    up1.set_mode("bad_json")  # the first chunk is fine, the second is broken
    response, events = gateway.stream("/v1/chat/completions", chain["key"],
                                      {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "primary"
    last = json.loads(events[-1])
    assert last["error"]["type"] == "provider_error"
    assert "[DONE]" not in events
    assert (up1.request_count, up2.request_count, up3.request_count) == (1, 0, 0)
    rows = _usage(chain["ws"])
    assert len(rows) == 1 and rows[0][0] == "primary" and rows[0][2] != 200


def test_embeddings_fall_back_too(gateway, chain):
    up1, up2, _ = chain["ups"]
    up1.set_mode(500)
    response = gateway.post("/v1/embeddings", chain["key"],
                            {"model": "embedding", "input": "a"})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "fallback"
    assert up2.last_request.body["model"] == "test-embedding"


def test_a_connection_that_keeps_failing_is_skipped_during_its_cool_down(gateway, chain):
    up1, up2, _ = chain["ups"]
    up1.set_mode(429)
    for _ in range(calls.COOLDOWN_FAILURES):
        assert gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO}).status_code == 200
    assert up1.request_count == calls.COOLDOWN_FAILURES
    assert cache.get(calls.cooldown_key(str(chain["conns"][0].pk)))
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.headers["x-llmconn-connection"] == "fallback"
    assert response.headers["x-llmconn-attempt"] == "1"  # the primary was not tried
    assert up1.request_count == calls.COOLDOWN_FAILURES
    # The cool-down over (its flag expired), the primary is tried first again.
    cache.delete(calls.cooldown_key(str(chain["conns"][0].pk)))
    up1.set_mode("ok")
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.headers["x-llmconn-connection"] == "primary"


def test_a_connection_in_cool_down_is_still_tried_when_every_other_one_fails(gateway, chain):
    up1, up2, up3 = chain["ups"]
    cache.set(calls.cooldown_key(str(chain["conns"][0].pk)), 1, 30)
    up2.set_mode(429)
    up3.set_mode(429)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "primary"
    assert response.headers["x-llmconn-attempt"] == "3"


def test_a_binding_without_fallbacks_never_skips_its_connection(
        gateway, upstream_factory, make_connection, make_workspace, make_key):
    up = upstream_factory(name="only", api_keys={KEY1})
    conn = make_connection(up, key=KEY1, name="only")
    key = make_key(make_workspace("Solo", chat=conn))
    cache.set(calls.cooldown_key(str(conn.pk)), 1, 30)
    response = gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 200 and up.request_count == 1


def test_an_inactive_or_deleted_fallback_is_left_out_and_the_rest_still_works(
        gateway, chain):
    from connections.services import connection_update

    up1, up2, up3 = chain["ups"]
    connection_update(connection=chain["conns"][1], is_active=False)
    up1.set_mode(429)
    response = gateway.post("/v1/chat/completions", chain["key"],
                            {"model": "chat", "messages": HELLO})
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "third"
    assert up2.request_count == 0


def test_resolved_lists_the_fallbacks_without_secrets(staff_client, chain):
    roles = staff_client.get(f"/api/v1/workspaces/{chain['ws'].slug}/resolved/").json()["roles"]
    assert [f["connection_name"] for f in roles["chat"]["fallbacks"]] == ["fallback", "third"]
    assert roles["chat"]["fallbacks"][1]["model"] == "test-model-large"
    assert KEY2 not in json.dumps(roles)


def test_the_python_client_falls_back_the_same_way(chain):
    up1, up2, _ = chain["ups"]
    up1.set_mode(429)
    client = WorkspaceClient(chain["ws"].slug)
    reply = async_to_sync(client.complete)([Message.user("Hello")])
    assert reply.text == "Hello from fallback." and reply.connection == "fallback"

    async def collect():
        return [c async for c in client.stream([Message.user("Hello")])]

    up1.set_mode(429)
    chunks = async_to_sync(collect)()
    assert chunks[-1].type == "done" and chunks[-1].response.connection == "fallback"
    assert [r[:3] for r in _usage(chain["ws"])] == [
        ("primary", 1, 429), ("fallback", 2, 200), ("primary", 1, 429), ("fallback", 2, 200)]


def test_the_python_client_reports_a_non_retryable_failure_without_falling_back(chain):
    from workspaces.client import LLMError

    up1, up2, _ = chain["ups"]
    up1.set_mode(401)
    with pytest.raises(LLMError) as info:
        async_to_sync(WorkspaceClient(chain["ws"].slug).complete)([Message.user("Hello")])
    assert info.value.code == "provider_auth_failed" and info.value.error_class == "auth"
    assert up2.request_count == 0


def test_connection_timeout_and_prices_are_set_through_the_api(staff_client):
    body = {"name": "priced", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": "http://127.0.0.1:9/v1", "credentials": {"api_key": KEY1},
            "timeout_seconds": 5, "input_cost_per_million_tokens": "0.5",
            "output_cost_per_million_tokens": "1.5"}
    response = staff_client.post("/api/v1/connections/", body, format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["timeout_seconds"] == 5
    assert created["input_cost_per_million_tokens"] == "0.500000"
    url = f"/api/v1/connections/{created['id']}/"
    for field, value in (("timeout_seconds", 0), ("timeout_seconds", 601),
                         ("input_cost_per_million_tokens", "-1"),
                         ("output_cost_per_million_tokens", "abc")):
        bad = staff_client.patch(url, {field: value}, format="json")
        assert bad.status_code == 400 and field in bad.json()["error"]["fields"]
    response = staff_client.patch(url, {"timeout_seconds": None}, format="json")
    assert response.status_code == 200 and response.json()["timeout_seconds"] is None
    assert response.json()["output_cost_per_million_tokens"] == "1.500000"
