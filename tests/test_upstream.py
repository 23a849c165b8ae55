"""The fake upstream itself behaves as its docstring says (other tests rely on it)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY

AUTH = {"Authorization": f"Bearer {UPSTREAM_KEY}"}


def test_models_listing_needs_a_key(upstream):
    assert httpx.get(f"{upstream.openai_url}/models").status_code == 401
    r = httpx.get(f"{upstream.openai_url}/models", headers=AUTH)
    assert r.status_code == 200
    assert "test-model" in [m["id"] for m in r.json()["data"]]
    assert upstream.last_request.key == UPSTREAM_KEY


@pytest.mark.parametrize("header", ["x-api-key", "x-litellm-api-key", "api-key"])
def test_key_is_accepted_from_known_headers(upstream, header):
    r = httpx.get(f"{upstream.openai_url}/models", headers={header: UPSTREAM_KEY})
    assert r.status_code == 200


def test_custom_header_name_can_be_added(upstream):
    upstream.key_headers.add("x-team-key")
    r = httpx.get(f"{upstream.openai_url}/models", headers={"X-Team-Key": UPSTREAM_KEY})
    assert r.status_code == 200


def test_chat_completion_answers_with_usage_and_the_requested_model(upstream):
    r = httpx.post(f"{upstream.openai_url}/chat/completions", headers=AUTH,
                   json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
    body = r.json()
    assert r.status_code == 200
    assert body["model"] == "test-model"
    assert body["choices"][0]["message"]["content"] == "Hello from upstream."
    assert body["usage"]["total_tokens"] > 0


def test_unknown_model_is_404(upstream):
    r = httpx.post(f"{upstream.openai_url}/chat/completions", headers=AUTH,
                   json={"model": "nope", "messages": []})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_chat_stream_ends_with_done_and_carries_tool_calls(upstream):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    with httpx.stream("POST", f"{upstream.openai_url}/chat/completions", headers=AUTH,
                      json={"model": "test-model", "stream": True, "tools": tools,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": "hi"}]}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    names = [tc["function"].get("name") for c in chunks for ch in c["choices"]
             for tc in ch["delta"].get("tool_calls", [])]
    assert "get_weather" in names
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_embeddings_in_floats_and_base64(upstream):
    r = httpx.post(f"{upstream.openai_url}/embeddings", headers=AUTH,
                   json={"model": "test-embedding", "input": ["a", "b"]})
    assert len(r.json()["data"]) == 2
    r = httpx.post(f"{upstream.openai_url}/embeddings", headers=AUTH,
                   json={"model": "test-embedding", "input": "a", "encoding_format": "base64"})
    assert len(base64.b64decode(r.json()["data"][0]["embedding"])) == 4 * 8


def test_anthropic_messages_and_stream(upstream):
    headers = {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-haiku-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{upstream.anthropic_url}/v1/messages", headers=headers, json=body)
    assert r.json()["content"][0]["text"] == "Hello from upstream."
    with httpx.stream("POST", f"{upstream.anthropic_url}/v1/messages", headers=headers,
                      json=dict(body, stream=True, tools=[{"name": "t", "input_schema": {}}])) as r:
        text = r.read().decode()
    assert "event: message_stop" in text and "tool_use" in text
    assert httpx.get(f"{upstream.anthropic_url}/v1/models", headers=headers).json()["data"]


def test_anthropic_errors_use_anthropic_shape(upstream):
    r = httpx.post(f"{upstream.anthropic_url}/v1/messages", headers={"x-api-key": "wrong"},
                   json={"model": "claude-haiku-4-5", "messages": []})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("mode,status", [(401, 401), (429, 429), (500, 500), ("not_found", 404)])
def test_modes_answer_their_status(upstream, mode, status):
    upstream.set_mode(mode)
    assert httpx.get(f"{upstream.openai_url}/models", headers=AUTH).status_code == status


def test_mode_for_n_times_then_back_to_ok(upstream):
    upstream.set_mode(500, times=1)
    assert httpx.get(f"{upstream.openai_url}/models", headers=AUTH).status_code == 500
    assert httpx.get(f"{upstream.openai_url}/models", headers=AUTH).status_code == 200


def test_mode_limited_to_a_path(upstream):
    upstream.set_mode(429, path="/v1/chat")
    assert httpx.get(f"{upstream.openai_url}/models", headers=AUTH).status_code == 200


def test_bad_json_and_echo_key(upstream):
    upstream.set_mode("bad_json")
    r = httpx.get(f"{upstream.openai_url}/models", headers=AUTH)
    with pytest.raises(ValueError):
        r.json()
    upstream.set_mode("echo_key")
    r = httpx.get(f"{upstream.openai_url}/models", headers=AUTH)
    assert r.status_code == 401 and UPSTREAM_KEY in r.text


def test_hang_times_out_the_client(upstream):
    upstream.set_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{upstream.openai_url}/models", headers=AUTH, timeout=0.3)


def test_drop_closes_without_answer(upstream):
    upstream.set_mode("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{upstream.openai_url}/models", headers=AUTH)


def test_oauth_tokens_are_issued_counted_and_accepted(upstream):
    r = httpx.post(upstream.token_url, data={"grant_type": "client_credentials",
                                             "client_id": "test-client",
                                             "client_secret": "test-client-secret-0001"})
    token = r.json()["access_token"]
    assert r.json()["expires_in"] == 3600 and upstream.tokens_issued == 1
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{upstream.openai_url}/models", headers=headers).status_code == 200
    upstream.expire_tokens()
    assert httpx.get(f"{upstream.openai_url}/models", headers=headers).status_code == 401


def test_oauth_wrong_secret_is_refused(upstream):
    r = httpx.post(upstream.token_url, data={"grant_type": "client_credentials",
                                             "client_id": "test-client", "client_secret": "x"})
    assert r.status_code == 401 and upstream.tokens_issued == 0


def test_two_instances_keep_separate_records(upstream_factory):
    a = upstream_factory(name="a", api_keys={"key-a"})
    b = upstream_factory(name="b", api_keys={"key-b"})
    assert httpx.get(f"{a.openai_url}/models", headers={"x-api-key": "key-a"}).status_code == 200
    assert httpx.get(f"{b.openai_url}/models", headers={"x-api-key": "key-a"}).status_code == 401
    assert a.keys_seen() == ["key-a"] and b.keys_seen() == ["key-a"]
    assert a.port != b.port


def test_closed_port_refuses(closed_port_url):
    with pytest.raises(httpx.ConnectError):
        httpx.get(closed_port_url)


def _standalone(*args):
    """`python -m tests.upstream` as README's First steps start it, on a free port."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1/models"
    for _ in range(100):
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, url


def test_standalone_upstream_requires_the_documented_key():
    proc, url = _standalone()
    try:
        assert httpx.get(url, headers={"Authorization": "Bearer sk-wrong-key-000000"}).status_code == 401
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=AUTH).status_code == 200
    finally:
        proc.terminate()
        proc.wait(5)


def test_standalone_upstream_with_any_key_accepts_any_key():
    proc, url = _standalone("--any-key")
    try:
        assert httpx.get(url, headers={"Authorization": "Bearer sk-wrong-key-000000"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(5)
