"""/v1 over providers.transport: private-CA TLS, redirects, stream time limits and OAuth token
refresh, end to end (Django's ASGI request path, real upstreams on loopback)."""

from __future__ import annotations

import json

import pytest
import trustme

from connections.services import connection_create
from tests.conftest import UPSTREAM_KEY

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_upstream(upstream_factory, ca):
    return upstream_factory(name="tls", api_keys={UPSTREAM_KEY}, tls=ca)


@pytest.mark.parametrize("anthropic", [False, True])
def test_a_private_ca_is_502_without_ca_cert_and_works_with_it(
        gateway, tls_upstream, make_connection, make_workspace, make_key, anthropic):
    bare = make_connection(tls_upstream, name="bare", anthropic=anthropic)
    key = make_key(make_workspace("TLS", chat=bare))
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["code"] == "provider_unreachable" and "certificate" in error["message"]
    assert tls_upstream.request_count == 0

    trusted = make_connection(tls_upstream, name="trusted", anthropic=anthropic,
                              config={"ca_cert": tls_upstream.ca_pem})
    key = make_key(make_workspace("TLS ok", chat=trusted))
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello from tls."
    response, events = gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                                  "stream": True})
    assert response.status_code == 200 and events[-1] == "[DONE]"


@pytest.mark.parametrize("anthropic", [False, True])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirecting_provider_is_502_blocked_and_the_target_gets_nothing(
        gateway, upstream_factory, make_connection, make_workspace, make_key, status,
        anthropic):
    target = upstream_factory(name="target", api_keys=set())
    source = upstream_factory(name="source", api_keys={UPSTREAM_KEY})
    source.redirect_to = target.url
    source.set_mode("redirect", status=status)
    conn = make_connection(source, anthropic=anthropic)
    key = make_key(make_workspace("Redirect", chat=conn))
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error["code"] == "provider_blocked" and target.url in error["message"]
    response, _ = gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                             "stream": True})
    assert response.status_code == 502
    assert target.request_count == 0 and source.request_count == 2


def test_a_stream_silent_past_the_timeout_ends_with_a_timeout_error_event(
        gateway, upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, timeout_seconds=1)
    key = make_key(make_workspace("Slow", chat=conn))
    upstream.set_mode("drip", delay_ms=2500, chunks=2)
    response, events = gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                                  "stream": True})
    assert response.status_code == 200
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "0 "
    error = json.loads(events[-1])["error"]
    assert error["error_class"] == "timeout"


def test_a_stream_three_times_the_timeout_that_keeps_producing_completes(
        gateway, upstream, make_connection, make_workspace, make_key):
    # A chunk every second for 6 s (3x the 2 s limit). Each silence is 1 s, half the limit: a
    # 1 s limit against 1 s gaps raced (a loaded CI machine cut the stream at the third gap).
    conn = make_connection(upstream, timeout_seconds=2)
    key = make_key(make_workspace("Long", chat=conn))
    upstream.set_mode("drip", delay_ms=1000, chunks=7)
    response, events = gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                                  "stream": True})
    assert response.status_code == 200 and events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if json.loads(e).get("choices"))
    assert text == "0 1 2 3 4 5 6 "


def test_an_oauth_token_revoked_upstream_is_refreshed_once_and_the_call_succeeds(
        gateway, upstream, make_workspace, make_key):
    conn = connection_create(
        name="oauth", provider="openai_compatible", auth_method="oauth_client_credentials",
        base_url=upstream.openai_url, default_model="test-model",
        config={"token_url": upstream.token_url, "client_id": "test-client"},
        credentials={"client_secret": "test-client-secret-0001"})
    key = make_key(make_workspace("OAuth", chat=conn))
    assert gateway.post(CHAT, key, {"model": "chat", "messages": HELLO}).status_code == 200
    assert upstream.tokens_issued == 1
    upstream.expire_tokens()  # revoked at the provider; still cached here
    response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO})
    assert response.status_code == 200, response.content
    assert upstream.tokens_issued == 2
    statuses = [r.status for r in upstream.requests_to("/v1/chat")]
    assert statuses == [200, 401, 200]  # one refusal, one refresh, one retry
