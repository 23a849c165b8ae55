"""The gateway served by uvicorn (llmconn.asgi, the production entry point) with real clients:
the official `openai` SDK and the `litellm` SDK (#15). Errors raise the SDK's own exception
class with the request id, answers a retry cannot fix are not retried, large bodies pass and
the body limit and deep JSON are answered by the ASGI handler itself.

Needs PostgreSQL (the server process shares the test database); CI provides it.
"""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from workspaces.models import UsageRecord

from .conftest import start_server, stop_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]
SMALL_LIMIT = 200_000


@pytest.fixture
def team(upstream_factory, make_connection, make_workspace, make_key):
    up = upstream_factory(name="team", api_keys={"sk-team-key-000000001"})
    chat = make_connection(up, key="sk-team-key-000000001", name="team-chat")
    ws = make_workspace("Team", chat=chat, embedding=(chat, "test-embedding"))
    return {"up": up, "conn": chat, "ws": ws, "key": make_key(ws)}


def sdk(gateway_server, key, retries=0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway_server[0]}/v1", api_key=key, max_retries=retries,
                         timeout=60)


def test_openai_sdk_sees_the_request_id(gateway_server, team):
    completion = sdk(gateway_server, team["key"]).chat.completions.with_raw_response.create(
        model="chat", messages=HELLO)
    assert completion.headers["x-request-id"].startswith("req_")
    parsed = completion.parse()
    assert parsed._request_id == completion.headers["x-request-id"]


@pytest.mark.parametrize("case,exc_class,status", [
    ("forbidden", openai.BadRequestError, 400),
    ("bad_key", openai.AuthenticationError, 401),
    ("unknown_model", openai.NotFoundError, 404),
    ("provider_422", openai.UnprocessableEntityError, 422),
    ("provider_auth", openai.InternalServerError, 502),
])
def test_openai_sdk_errors_raise_the_right_class_and_are_not_retried(gateway_server, team,
                                                                     case, exc_class, status):
    key, kwargs = team["key"], {"model": "chat", "messages": HELLO}
    if case == "forbidden":
        kwargs["extra_body"] = {"api_base": "http://elsewhere.example"}
    elif case == "bad_key":
        key = "lck_not-a-key"
    elif case == "unknown_model":
        kwargs["model"] = "nope"
    elif case == "provider_422":
        team["up"].set_mode("status", status=422)
    else:
        team["up"].set_mode(401)
    client = sdk(gateway_server, key, retries=2)  # would retry 5xx twice without the header
    with pytest.raises(exc_class) as raised:
        client.chat.completions.create(**kwargs)
    assert raised.value.status_code == status
    assert raised.value.request_id and raised.value.request_id.startswith("req_")
    if case == "provider_auth":
        assert team["up"].request_count == 1  # x-should-retry: false was honoured
        assert raised.value.body["code"] == "provider_auth_failed"
    if case == "provider_422":
        assert "Upstream answered 422." in raised.value.message


def test_openai_sdk_retries_what_a_retry_can_fix(gateway_server, team):
    team["up"].set_mode(500, times=1)
    completion = sdk(gateway_server, team["key"], retries=1).chat.completions.create(
        model="chat", messages=HELLO)
    assert completion.choices[0].message.content == "Hello from team."
    assert team["up"].request_count == 2


def test_a_30_mb_body_is_accepted_through_uvicorn(gateway_server, team):
    text = "x" * (30 * 1024 * 1024)
    completion = sdk(gateway_server, team["key"]).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": text}])
    assert completion.choices[0].message.content == "Hello from team."
    assert len(team["up"].last_request.body["messages"][0]["content"]) == len(text)


def test_litellm_sdk_as_a_client(gateway_server, team):
    import litellm

    base = f"{gateway_server[0]}/v1"
    answer = litellm.completion(model="openai/chat", api_base=base, api_key=team["key"],
                                messages=HELLO, num_retries=0, min_p=0.1,
                                extra_body={"chat_template_kwargs": {"x": 1}})
    assert answer.choices[0].message.content == "Hello from team."
    sent = team["up"].last_request.body
    assert sent["chat_template_kwargs"] == {"x": 1}
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(model="openai/chat", api_base=base, api_key=team["key"],
                           messages=HELLO, num_retries=0, extra_body={"timeout": 5})
    team["up"].set_mode(401)
    # litellm chooses its exception class from the message text as well as the status; the
    # provider's explanation and ours reach the caller either way.
    with pytest.raises(openai.OpenAIError) as raised:
        litellm.completion(model="openai/chat", api_base=base, api_key=team["key"],
                           messages=HELLO, num_retries=0)
    assert "credentials of the workspace's connection" in str(raised.value)
    assert UsageRecord.objects.filter(status_code=502).exists()


# --- the ASGI handler's own answers (a server with a small body limit) -------------------------

@pytest.fixture(scope="module")
def small_server(django_db_setup, django_db_blocker, tmp_path_factory):
    from tests.upstream import free_port

    from .conftest import _require_postgres

    _require_postgres()
    port = free_port()
    old = os.environ.get("LLMCONN_MAX_REQUEST_BYTES")
    os.environ["LLMCONN_MAX_REQUEST_BYTES"] = str(SMALL_LIMIT)
    try:
        process = start_server(tmp_path_factory.mktemp("small") / "uvicorn.log", port)
    finally:
        if old is None:
            os.environ.pop("LLMCONN_MAX_REQUEST_BYTES")
        else:
            os.environ["LLMCONN_MAX_REQUEST_BYTES"] = old
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


def test_a_body_over_the_limit_is_413_naming_it_before_it_is_read(small_server, team):
    big = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * (
        SMALL_LIMIT + 10) + b'"}]}'
    for headers in ({"Authorization": f"Bearer {team['key']}"}, {}):
        response = httpx.post(f"{small_server}/v1/chat/completions", content=big,
                              headers={**headers, "content-type": "application/json"},
                              timeout=30)
        assert response.status_code == 413
        assert f"{SMALL_LIMIT} bytes" in response.json()["error"]["message"]
        assert response.headers["x-request-id"].startswith("req_")

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield big[:100_000]
        yield big[100_000:]

    response = httpx.post(f"{small_server}/v1/chat/completions", content=chunks(),
                          headers={"Authorization": f"Bearer {team['key']}",
                                   "content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert team["up"].request_count == 0


@pytest.mark.parametrize("raw", [b"[" * 5000, b'{"a":' * 5000, b"\xff"])
def test_deep_or_malformed_json_through_uvicorn_is_400(small_server, team, raw):
    for headers in ({"Authorization": f"Bearer {team['key']}"}, {}):
        response = httpx.post(f"{small_server}/v1/chat/completions", content=raw,
                              headers={**headers, "content-type": "application/json"},
                              timeout=30)
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error"]["code"] == "invalid_json"
        assert response.headers["x-request-id"]


# --- usage you can bill on (#21) ---------------------------------------------------------------

def test_a_client_that_disconnects_mid_stream_is_charged_for_what_was_generated(
        gateway_server, team):
    import time

    team["up"].set_mode("endless", delay_ms=20)  # streams "x" chunks, never any usage
    received = 0
    with httpx.stream("POST", f"{gateway_server[0]}/v1/chat/completions",
                      json={"model": "chat", "messages": HELLO, "stream": True},
                      headers={"Authorization": f"Bearer {team['key']}"}, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 20:
                break  # the client goes away
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not UsageRecord.objects.exists():
        time.sleep(0.2)
    record = UsageRecord.objects.get()
    assert record.status_code == 499 and record.usage_source == "estimated"
    assert record.input_tokens > 0 and record.output_tokens > 0


def test_sdk_decodes_base64_embeddings_flat_and_reads_per_token_ones(gateway_server, team):
    client = sdk(gateway_server, team["key"])
    decoded = client.embeddings.create(model="embedding", input=["a", "b"])  # SDK: base64
    assert team["up"].last_request.body["encoding_format"] == "base64"  # forwarded as asked
    floats = client.embeddings.create(model="embedding", input=["a", "b"],
                                      encoding_format="float")
    for a, b in zip(decoded.data, floats.data, strict=True):
        assert list(a.embedding) == pytest.approx(b.embedding, abs=1e-4)
    team["up"].set_mode("per_token")
    nested = client.embeddings.create(model="embedding", input=["two words"])
    assert len(nested.data[0].embedding) == 2 and len(nested.data[0].embedding[0]) == 8
    assert UsageRecord.objects.filter(endpoint="embeddings", status_code=200).count() == 3
