"""Usage you can bill on (#21): streams whose provider reports no usage are counted with
litellm's token counter (usage_source "estimated"), budgets see those tokens, a client that
goes away mid-stream is charged, and per-token embeddings never make a 500."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from providers import tokens
from providers.errors import ProviderError
from providers.forward import encode_embeddings
from workspaces import budgets, services
from workspaces.client import Message, WorkspaceClient
from workspaces.models import UsageRecord

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello, how are you today?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def team(upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, name="llamacpp")
    ws = make_workspace("Team", chat=conn, embedding=(conn, "test-embedding"))
    return {"up": upstream, "conn": conn, "ws": ws, "key": make_key(ws)}


def test_a_stream_without_provider_usage_is_estimated(gateway, team):
    team["up"].set_mode("no_usage")
    response, events = gateway.stream(CHAT, team["key"], {"model": "chat", "messages": HELLO,
                                                          "stream": True})
    assert response.status_code == 200 and events[-1] == "[DONE]"
    record = UsageRecord.objects.get()
    expected = tokens.estimate(model="openai/test-model", messages=HELLO,
                               output_text="Hello from upstream.")
    assert (record.input_tokens, record.output_tokens) == expected
    assert record.output_tokens > 0 and record.usage_source == "estimated"


def test_an_answer_without_usage_is_estimated(gateway, team):
    team["up"].set_mode("no_usage")
    response = gateway.post(CHAT, team["key"], {"model": "chat", "messages": HELLO})
    assert response.status_code == 200 and "usage" not in response.json()
    record = UsageRecord.objects.get()
    assert (record.input_tokens, record.output_tokens) == tokens.estimate(
        model="openai/test-model", messages=HELLO, output_text="Hello from upstream.")
    assert record.usage_source == "estimated"


def test_the_client_still_gets_the_usage_chunk_it_asked_for(gateway, team):
    team["up"].set_mode("no_usage")
    _, events = gateway.stream(CHAT, team["key"], {
        "model": "chat", "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": True}})
    last = json.loads(events[-2])
    record = UsageRecord.objects.get()
    assert last["choices"] == []
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (
        record.input_tokens, record.output_tokens)


def test_streamed_tool_call_arguments_are_counted(gateway, team):
    team["up"].set_mode("no_usage")
    _, events = gateway.stream(CHAT, team["key"], {"model": "chat", "messages": HELLO,
                                                   "tools": TOOLS, "stream": True})
    parts = [tc["function"] for e in events[:-1] for c in json.loads(e)["choices"]
             for tc in (c["delta"].get("tool_calls") or [])]
    streamed = "".join((p.get("name") or "") + (p.get("arguments") or "") for p in parts)
    assert "get_weather" in streamed and "city" in streamed
    record = UsageRecord.objects.get()
    assert record.output_tokens == tokens.count_output(model="openai/test-model", text=streamed)
    assert record.usage_source == "estimated"


def test_provider_usage_is_kept_and_marked_so(gateway, team):
    gateway.stream(CHAT, team["key"], {"model": "chat", "messages": HELLO, "stream": True})
    record = UsageRecord.objects.get()
    assert record.usage_source == "provider"
    assert record.output_tokens == 3  # the fake upstream's own count


def test_a_token_budget_stops_a_client_that_streams_without_usage(gateway, team):
    from django.core.cache import cache

    cache.clear()  # budget counters of earlier tests (ids are reused) are not this budget's
    team["up"].set_mode("no_usage")
    in_, out = tokens.estimate(model="openai/test-model", messages=HELLO,
                               output_text="Hello from upstream.")
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=2 * (in_ + out))
    body = {"model": "chat", "messages": HELLO, "stream": True}
    statuses = [gateway.stream(CHAT, team["key"], body)[0].status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert UsageRecord.objects.filter(status_code=200, usage_source="estimated").count() == 2


def test_usage_api_shows_estimated_tokens_apart_and_in_the_totals(gateway, team, staff_client):
    gateway.stream(CHAT, team["key"], {"model": "chat", "messages": HELLO, "stream": True})
    team["up"].set_mode("no_usage")
    gateway.stream(CHAT, team["key"], {"model": "chat", "messages": HELLO, "stream": True})
    estimated = UsageRecord.objects.get(usage_source="estimated")
    report = staff_client.get("/api/v1/usage/?group_by=workspace").json()
    totals = report["totals"]
    assert totals["calls"] == 2 and totals["estimated_calls"] == 1
    assert totals["estimated_output_tokens"] == estimated.output_tokens
    assert totals["output_tokens"] == estimated.output_tokens + 3
    assert report["rows"][0]["estimated_input_tokens"] == estimated.input_tokens


def test_python_client_streams_are_estimated_too(team):
    team["up"].set_mode("no_usage")

    async def run():
        return [c async for c in WorkspaceClient(team["ws"].slug).stream(
            [Message.user("Hello, how are you today?")])]

    chunks = async_to_sync(run)()
    done = chunks[-1].response
    record = UsageRecord.objects.get()
    assert record.usage_source == "estimated" and record.output_tokens > 0
    assert done.text == "Hello from upstream."


# --- embeddings: per-token vectors ---------------------------------------------------------------

@pytest.mark.parametrize("fmt", [None, "float", "base64"])
def test_per_token_embeddings_are_no_500_and_are_recorded(gateway, team, fmt):
    team["up"].set_mode("per_token")
    body = {"model": "embedding", "input": ["two words", "three words here"]}
    if fmt:
        body["encoding_format"] = fmt
    response = gateway.post("/v1/embeddings", team["key"], body)
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert [len(d["embedding"]) for d in data] == [2, 3]  # one vector per token, as sent
    assert all(len(v) == 8 for d in data for v in d["embedding"])
    record = UsageRecord.objects.get()
    assert record.status_code == 200 and record.input_tokens > 0


def test_base64_encoding_handles_flat_and_nested_vectors_and_names_other_shapes():
    import base64
    import struct

    flat = {"data": [{"embedding": [0.5, 0.25]}]}
    encode_embeddings(flat, label="x")
    assert struct.unpack("<2f", base64.b64decode(flat["data"][0]["embedding"])) == (0.5, 0.25)
    nested = {"data": [{"embedding": [[0.5], [0.25]]}]}
    encode_embeddings(nested, label="x")
    assert nested["data"][0]["embedding"] == [[0.5], [0.25]]
    for odd in ([[[0.5]]], ["a"], {"v": 1}, None):
        with pytest.raises(ProviderError) as refused:
            encode_embeddings({"data": [{"embedding": odd}]}, label="conn")
        assert refused.value.status == 502 and "came back as" in refused.value.message
