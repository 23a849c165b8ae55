"""The gateway served by uvicorn in another process, called with the official `openai` SDK.

Needs PostgreSQL (the server process shares the test database); the tests that prove a change
made in this process reaches the server without a restart also need Redis (the shared
revision stamp). CI provides both.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from asgiref.sync import async_to_sync

from connections.services import connection_update
from tests.conftest import CANARY
from workspaces.models import UsageRecord, WorkspaceAPIKey
from workspaces.services import api_key_revoke

from .conftest import require_shared_cache

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}


def sdk(gateway_server, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_server[0]}/v1", api_key=key, max_retries=0,
                         timeout=30)


@pytest.fixture
def team(upstream_factory, make_connection, make_workspace, make_key):
    up = upstream_factory(name="team", api_keys={"sk-team-key-000000001"})
    chat = make_connection(up, key="sk-team-key-000000001", name="team-chat")
    ws = make_workspace("Team", chat=chat, agent=chat, embedding=(chat, "test-embedding"))
    return {"up": up, "conn": chat, "ws": ws, "key": make_key(ws)}


def test_sdk_chat(gateway_server, team):
    client = sdk(gateway_server, team["key"])
    completion = client.chat.completions.create(model="chat", messages=HELLO)
    assert completion.choices[0].message.content == "Hello from team."
    assert completion.usage.total_tokens > 0
    assert team["up"].last_request.key == "sk-team-key-000000001"
    assert UsageRecord.objects.filter(workspace=team["ws"], status_code=200).count() == 1


def test_sdk_stream(gateway_server, team):
    stream = sdk(gateway_server, team["key"]).chat.completions.create(
        model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from team."
    assert chunks[-1].usage.completion_tokens > 0


def test_sdk_tools(gateway_server, team):
    client = sdk(gateway_server, team["key"])
    completion = client.chat.completions.create(model="chat", messages=HELLO, tools=[WEATHER])
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}
    streamed = list(client.chat.completions.create(model="chat", messages=HELLO,
                                                   tools=[WEATHER], stream=True))
    parts = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert parts[0].function.name == "get_weather"
    assert json.loads("".join(p.function.arguments or "" for p in parts)) == {"city": "test"}


def test_sdk_embeddings(gateway_server, team):
    client = sdk(gateway_server, team["key"])
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    result = client.embeddings.create(model="embedding", input=["a", "b"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    floats = client.embeddings.create(model="embedding", input="a", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-4)


def test_sdk_models(gateway_server, team):
    ids = [m.id for m in sdk(gateway_server, team["key"]).models.list()]
    assert ids[:3] == ["chat", "agent", "embedding"] and "test-model" in ids


def test_sdk_errors(gateway_server, team):
    client = sdk(gateway_server, team["key"])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="chat", messages=HELLO,
                                       extra_body={"api_base": "http://evil.example"})
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    team["up"].set_mode(401)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="chat", messages=HELLO)
    assert info.value.status_code == 502  # the provider's 401 is not our 401
    assert info.value.body["code"] == "provider_auth_failed"
    with pytest.raises(openai.AuthenticationError):
        sdk(gateway_server, "lck_not-a-real-key-000000000000000000000").models.list()


@pytest.mark.redis
def test_revoked_key_is_refused_by_the_other_process(gateway_server, team):
    require_shared_cache()
    client = sdk(gateway_server, team["key"])
    assert client.models.list().data
    api_key_revoke(api_key=WorkspaceAPIKey.objects.get(workspace=team["ws"]))
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_key_of_workspace_a_cannot_use_workspace_b(gateway_server, upstream_factory,
                                                     make_connection, make_workspace,
                                                     make_key):
    up_a = upstream_factory(name="a", api_keys={"sk-a-000000000000"})
    up_b = upstream_factory(name="b", api_keys={"sk-b-000000000000"}, models=["b-only"])
    key_a = make_key(make_workspace("A", chat=make_connection(up_a, key="sk-a-000000000000")))
    make_workspace("B", chat=make_connection(up_b, key="sk-b-000000000000",
                                             default_model="b-only"))
    client = sdk(gateway_server, key_a)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="b-only", messages=HELLO)
    assert "b-only" not in [m.id for m in client.models.list()]
    assert up_b.request_count == 0


def test_two_workspaces_same_provider_concurrently_reach_their_own_upstream(
        gateway_server, upstream_factory, make_connection, make_workspace, make_key):
    up1 = upstream_factory(name="one", api_keys={"sk-one-000000000000"})
    up2 = upstream_factory(name="two", api_keys={"sk-two-000000000000"})
    key1 = make_key(make_workspace("One", chat=make_connection(up1, key="sk-one-000000000000")))
    key2 = make_key(make_workspace("Two", chat=make_connection(up2, key="sk-two-000000000000")))

    async def run():
        clients = [openai.AsyncOpenAI(base_url=f"{gateway_server[0]}/v1", api_key=k,
                                      max_retries=0, timeout=30) for k in (key1, key2)]
        calls = [c.chat.completions.create(model="chat", messages=HELLO)
                 for _ in range(5) for c in clients]
        results = await asyncio.gather(*calls)
        for c in clients:
            await c.close()
        return results

    results = async_to_sync(run)()
    texts = [r.choices[0].message.content for r in results]
    assert texts == ["Hello from one.", "Hello from two."] * 5
    assert set(up1.keys_seen()) == {"sk-one-000000000000"} and up1.request_count == 5
    assert set(up2.keys_seen()) == {"sk-two-000000000000"} and up2.request_count == 5


@pytest.mark.redis
def test_editing_a_bound_connections_key_is_used_by_the_other_process_next_call(
        gateway_server, team):
    require_shared_cache()
    up = team["up"]
    up.api_keys.add("sk-team-key-rotated-02")
    client = sdk(gateway_server, team["key"])
    client.chat.completions.create(model="chat", messages=HELLO)
    assert up.last_request.key == "sk-team-key-000000001"
    connection_update(connection=team["conn"],
                      credentials={"api_key": "sk-team-key-rotated-02"})
    client.chat.completions.create(model="chat", messages=HELLO)
    assert up.last_request.key == "sk-team-key-rotated-02"


def test_canary_key_is_never_in_responses_or_server_logs(gateway_server, upstream_factory,
                                                         make_connection, make_workspace,
                                                         make_key):
    up = upstream_factory(name="canary", api_keys={CANARY})
    key = make_key(make_workspace("Canary", chat=make_connection(up, key=CANARY)))
    client = sdk(gateway_server, key)
    seen = []
    for mode, status in (("ok", None), ("echo_key", 400), ("echo_key", 401), (500, None)):
        up.set_mode(mode, status=status)
        for stream in (False, True):
            try:
                result = client.chat.completions.create(model="chat", messages=HELLO,
                                                        stream=stream)
                seen.append(str(list(result) if stream else result))
            except openai.APIStatusError as exc:
                seen.append(exc.response.text)
    assert CANARY in up.keys_seen()
    assert not any(CANARY in text for text in seen)
    assert CANARY not in gateway_server[1].read_text()
