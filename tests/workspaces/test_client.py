"""The Python client (workspaces.client) against OpenAI- and Anthropic-style fake upstreams."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync

from workspaces.client import LLMError, Message, Tool, WorkspaceClient
from workspaces.models import UsageRecord

WEATHER = Tool("get_weather", "Weather in a city",
               {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]})
STYLES = pytest.mark.parametrize("anthropic", [False, True], ids=["openai", "anthropic"])


def run(coro_fn, *args, **kwargs):
    return async_to_sync(coro_fn)(*args, **kwargs)


async def _collect(agen):
    return [chunk async for chunk in agen]


@pytest.fixture
def client_for(upstream, make_connection, make_workspace):
    def make(anthropic=False):
        conn = make_connection(upstream, anthropic=anthropic)
        embed = make_connection(upstream)
        ws = make_workspace("W", chat=conn, embedding=(embed, "test-embedding"))
        return WorkspaceClient(ws.slug)
    return make


@STYLES
def test_complete_returns_text_usage_and_records_it(client_for, anthropic):
    reply = run(client_for(anthropic).complete, [Message.user("Hi")])
    assert reply.text == "Hello from upstream."
    assert reply.tool_calls == ()
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    record = UsageRecord.objects.get()
    assert record.api_key is None and record.status_code == 200 and record.role == "chat"


@STYLES
def test_system_prompt_is_placed_per_provider(client_for, upstream, anthropic):
    run(client_for(anthropic).complete, [Message.user("Hi")], system="Be brief.")
    body = upstream.last_request.body
    if anthropic:
        assert "Be brief." in json.dumps(body["system"])
        assert [m["role"] for m in body["messages"]] == ["user"]
    else:
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}


@STYLES
def test_tool_calls_are_normalized(client_for, anthropic):
    reply = run(client_for(anthropic).complete, [Message.user("Weather?")], tools=[WEATHER])
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.name == "get_weather" and call.arguments == {"city": "test"} and call.id


@STYLES
def test_tool_results_round_trip(client_for, upstream, anthropic):
    client = client_for(anthropic)
    first = run(client.complete, [Message.user("Weather?")], tools=[WEATHER])
    call = first.tool_calls[0]
    history = [Message.user("Weather?"), first.as_message(),
               Message.tool(call.id, {"temp_c": 21})]
    second = run(client.complete, history, tools=[WEATHER], tool_choice="none")
    assert second.text == "Hello from upstream."
    sent = json.dumps(upstream.last_request.body)
    assert call.id in sent and "21" in sent
    if anthropic:
        assert "tool_result" in sent and "tool_use" in sent


@STYLES
def test_stream_yields_deltas_then_done(client_for, anthropic):
    chunks = run(_collect, client_for(anthropic).stream([Message.user("Hi")]))
    assert chunks[-1].type == "done"
    text = "".join(c.text for c in chunks if c.type == "delta")
    assert text == "Hello from upstream." == chunks[-1].response.text
    assert chunks[-1].response.usage.output_tokens > 0
    assert UsageRecord.objects.get().stream


@STYLES
def test_stream_assembles_tool_calls(client_for, anthropic):
    chunks = run(_collect, client_for(anthropic).stream([Message.user("Weather?")],
                                                         tools=[WEATHER]))
    calls = [c.tool_call for c in chunks if c.type == "tool_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather" and calls[0].arguments == {"city": "test"}
    assert chunks[-1].type == "done" and chunks[-1].response.tool_calls == tuple(calls)


def test_embed_returns_one_vector_per_text(client_for):
    vectors = run(client_for().embed, ["a", "b", "c"])
    assert len(vectors) == 3 and all(len(v) == 8 for v in vectors)


def test_provider_auth_failure_is_an_llm_error_naming_the_provider(client_for, upstream):
    client = client_for()
    upstream.set_mode(401)
    with pytest.raises(LLMError) as info:
        run(client.complete, [Message.user("Hi")])
    assert info.value.error_class == "auth" and info.value.status == 502
    chunks = run(_collect, client.stream([Message.user("Hi")]))
    assert [c.type for c in chunks] == ["error"]
    assert chunks[0].error.error_class == "auth"


def test_unconfigured_role_is_an_llm_error(client_for):
    with pytest.raises(LLMError) as info:
        run(client_for().complete, [Message.user("Hi")], role="agent")
    assert info.value.code == "role_not_configured"


def test_unknown_workspace_is_an_llm_error(db):
    with pytest.raises(LLMError):
        run(WorkspaceClient("nope").complete, [Message.user("Hi")])


def test_stopping_a_stream_early_still_records_usage(client_for):
    async def first_delta(client):
        agen = client.stream([Message.user("Hi")])
        async for chunk in agen:
            if chunk.type == "delta":
                await agen.aclose()
                return chunk

    assert run(first_delta, client_for()).text == "Hello"
    assert UsageRecord.objects.get().stream


# --- the same pass-through and errors as the gateway (#15) ------------------------------------

def test_client_forwards_extension_fields_as_given(client_for, upstream):
    client = client_for()
    run(client.complete, [Message.user("Hi")], min_p=0.05, chat_template_kwargs={"a": 1},
        store=True, metadata={"team": "x"})
    body = upstream.last_request.body
    assert (body["min_p"], body["chat_template_kwargs"], body["store"], body["metadata"]) == (
        0.05, {"a": 1}, True, {"team": "x"})
    run(client.embed, ["a"], input_type="query", dimensions=8)
    body = upstream.last_request.body
    assert (body["input_type"], body["dimensions"]) == ("query", 8)


def test_client_refuses_redirect_fields_naming_them(client_for, upstream):
    client = client_for()
    with pytest.raises(LLMError) as refused:
        run(client.complete, [Message.user("Hi")], api_base="http://elsewhere.example")
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        400, "forbidden_parameter", "api_base")
    chunks = run(_collect, client.stream([Message.user("Hi")], extra_headers={"x": "y"}))
    assert chunks[0].type == "error" and chunks[0].error.code == "forbidden_parameter"
    with pytest.raises(LLMError):
        run(client.embed, ["a"], litellm_params={})
    assert upstream.request_count == 0


def test_client_errors_carry_the_providers_message_and_a_request_id(client_for, upstream):
    client = client_for(anthropic=True)
    with pytest.raises(LLMError) as refused:  # litellm would drop it for Anthropic
        run(client.complete, [Message.user("Hi")], n=2)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "n"
    upstream.set_mode("status", status=422)
    with pytest.raises(LLMError) as failed:
        run(client.complete, [Message.user("Hi")])
    assert failed.value.status == 422 and "Upstream answered 422." in failed.value.message
    assert failed.value.request_id.startswith("req_")


def test_client_embeds_only_with_an_embeddings_capable_connection(upstream, make_connection,
                                                                  make_workspace):
    from workspaces.models import SystemDefault

    claude = make_connection(upstream, anthropic=True)
    SystemDefault.objects.create(role="embedding", connection=claude)
    client = WorkspaceClient(make_workspace("NoEmbed", chat=claude).slug)
    with pytest.raises(LLMError) as refused:
        run(client.embed, ["a"])
    assert refused.value.code == "unsupported_endpoint"
    assert upstream.request_count == 0
