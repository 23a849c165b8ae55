"""providers.transport: the one outbound transport, proven on real servers on loopback.

TLS with a private CA (trustme), redirects on every provider path we reach (direct OpenAI wire,
litellm's Anthropic / Azure / Gemini / Bedrock paths, tests, listings, OAuth token URLs), the egress
check at the one DNS resolution, per-silence timeouts and backpressure. Nothing here mocks an
HTTP client: the requests go out through aiohttp to tests/upstream.py servers.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import trustme
from django.test import override_settings

from providers import checks, forward, oauth, transport
from providers.checks import ConnectionSettings
from providers.errors import ProviderError
from providers.params import litellm_kwargs
from tests.conftest import UPSTREAM_KEY

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_upstream(upstream_factory, ca):
    return upstream_factory(name="tls", api_keys={UPSTREAM_KEY}, tls=ca)


def _call(base_url, *, provider="openai_compatible", model="test-model", config=None,
          secrets=None):
    return litellm_kwargs(provider=provider, auth_method="api_key", base_url=base_url,
                          config=config or {}, secrets=secrets or {"api_key": UPSTREAM_KEY},
                          model=model)


def _chat(call, **kw):
    return asyncio.run(forward.chat(call=call, params={"messages": HELLO}, label="t", **kw))


def _stream(call, **kw):
    async def run():
        chunks = await forward.chat_stream(call=call, params={"messages": HELLO}, label="t",
                                           **kw)
        return [c async for c in chunks]

    return asyncio.run(run())


# --- TLS -------------------------------------------------------------------------------------

def test_a_private_ca_is_refused_without_ca_cert_naming_the_certificate_problem(tls_upstream):
    with pytest.raises(ProviderError) as caught:
        _chat(_call(tls_upstream.openai_url))
    assert caught.value.error_class == "unreachable"
    assert "certificate" in caught.value.message and "ca_cert" in caught.value.message
    assert tls_upstream.request_count == 0


def test_with_the_connections_ca_cert_the_direct_path_works(tls_upstream):
    call = _call(tls_upstream.openai_url, config={"ca_cert": tls_upstream.ca_pem})
    assert _chat(call)["choices"][0]["message"]["content"] == "Hello from tls."
    assert "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in _stream(call) if c["choices"]) == "Hello from tls."
    sent = tls_upstream.last_request
    assert sent.key == UPSTREAM_KEY and sent.headers["host"].startswith("localhost:")


def test_a_certificate_for_another_name_is_refused(upstream_factory, ca):
    other = upstream_factory(name="other", tls=ca, cert_names=("other.test",))
    with pytest.raises(ProviderError) as caught:
        _chat(_call(other.openai_url, config={"ca_cert": other.ca_pem}))
    assert caught.value.error_class == "unreachable"
    assert "certificate" in caught.value.message
    assert other.request_count == 0


def test_anthropic_through_litellm_verifies_tls_with_the_connections_ca(tls_upstream):
    bare = _call(tls_upstream.anthropic_url, provider="anthropic", model="claude-haiku-4-5")
    with pytest.raises(ProviderError) as caught:
        _chat(bare)
    assert caught.value.error_class == "unreachable" and "certificate" in caught.value.message
    assert tls_upstream.request_count == 0
    trusted = _call(tls_upstream.anthropic_url, provider="anthropic", model="claude-haiku-4-5",
                    config={"ca_cert": tls_upstream.ca_pem})
    answer = _chat(trusted)
    assert answer["choices"][0]["message"]["content"] == "Hello from tls."
    assert tls_upstream.last_request.path == "/anthropic/v1/messages"


def test_a_connection_test_without_the_ca_is_unreachable_and_with_it_passes(tls_upstream):
    s = ConnectionSettings(provider="openai_compatible", auth_method="api_key",
                           base_url=tls_upstream.openai_url, secrets={"api_key": UPSTREAM_KEY},
                           model="test-model")
    outcome = checks.test_connection(s, timeout=5)
    assert (outcome.ok, outcome.error_class) == (False, "unreachable")
    assert "certificate" in outcome.message
    trusted = ConnectionSettings(**{**s.__dict__, "config": {"ca_cert": tls_upstream.ca_pem}})
    assert checks.test_connection(trusted, timeout=5).ok
    assert checks.list_models(trusted, timeout=5)


def test_an_oauth_token_fetch_trusts_the_connections_ca(upstream_factory, ca, settings):
    """An identity provider behind the same private CA as the model server: the connection's
    `ca_cert` is trusted by its token fetch too (else the test fails at the token URL)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    idp = upstream_factory(name="idp", tls=ca, oauth_clients={"cid": "client-secret-0001"})
    s = ConnectionSettings(provider="openai_compatible", auth_method="oauth_client_credentials",
                           base_url=idp.openai_url,
                           config={"token_url": idp.token_url, "client_id": "cid"},
                           secrets={"client_secret": "client-secret-0001"}, model="test-model")
    outcome = checks.test_connection(s, timeout=5)
    assert (outcome.ok, outcome.error_class) == (False, "unreachable")
    assert "certificate" in outcome.message and idp.request_count == 0
    trusted = ConnectionSettings(**{**s.__dict__,
                                    "config": {**s.config, "ca_cert": idp.ca_pem}})
    assert checks.test_connection(trusted, timeout=5).ok
    assert idp.tokens_issued == 1 and idp.requests_to("/oauth/token")


def test_an_invalid_ca_cert_is_a_clear_error():
    with pytest.raises(transport.CertificateRefused, match="not a valid PEM"):
        transport.tls_context("-----BEGIN CERTIFICATE-----\nnot base64\n"
                              "-----END CERTIFICATE-----\n")


# --- redirects -------------------------------------------------------------------------------

@pytest.fixture
def redirecting(upstream_factory):
    """(source answering every request with a redirect, the target it points at)."""
    target = upstream_factory(name="target", api_keys=set())
    source = upstream_factory(name="source", api_keys={UPSTREAM_KEY},
                              oauth_clients={"cid": "client-secret-0001"})
    source.redirect_to = target.url
    return source, target


def _assert_blocked(err, status, target):
    assert err.error_class == "blocked", err.message
    assert f"HTTP {status}" in err.message and target.url in err.message
    assert target.request_count == 0


LITELLM_PATHS = {
    "anthropic": dict(provider="anthropic", model="claude-haiku-4-5", path="/anthropic"),
    "azure_openai": dict(provider="azure_openai", model="test-model", path="",
                         config={"api_version": "2024-10-21"}),
    "gemini": dict(provider="gemini", model="gemini-2.0-flash", path=""),
}


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_on_the_direct_path_is_blocked_and_the_target_gets_nothing(redirecting,
                                                                              status):
    source, target = redirecting
    source.set_mode("redirect", status=status)
    call = _call(source.openai_url)
    for run in (lambda: _chat(call), lambda: _stream(call),
                lambda: asyncio.run(forward.embed(call=_call(source.openai_url,
                                                             model="test-embedding"),
                                                  params={"input": ["a"]}, label="t"))):
        with pytest.raises(ProviderError) as caught:
            run()
        assert caught.value.status == 502
        _assert_blocked(caught.value, status, target)


@pytest.mark.parametrize("status", [301, 307, 308])
@pytest.mark.parametrize("name", sorted(LITELLM_PATHS))
def test_a_redirect_on_litellms_paths_is_blocked_and_the_target_gets_nothing(
        redirecting, name, status):
    source, target = redirecting
    source.set_mode("redirect", status=status)
    spec = LITELLM_PATHS[name]
    call = _call(source.url + spec["path"], provider=spec["provider"], model=spec["model"],
                 config=spec.get("config"))
    assert forward.direct_target(call) is None  # (really through litellm)
    with pytest.raises(ProviderError) as caught:
        _chat(call)
    _assert_blocked(caught.value, status, target)
    with pytest.raises(ProviderError) as caught:
        _stream(call)
    _assert_blocked(caught.value, status, target)
    assert source.request_count >= 2  # the source was asked, through our transport


@pytest.mark.parametrize("name", ["openai_compatible", *sorted(LITELLM_PATHS)])
def test_a_redirect_fails_the_connection_test_and_discovery_as_blocked(redirecting, name):
    source, target = redirecting
    source.set_mode("redirect", status=302)
    spec = LITELLM_PATHS.get(name, dict(provider=name, model="test-model", path="/v1"))
    s = ConnectionSettings(provider=spec["provider"], auth_method="api_key",
                           base_url=source.url + spec["path"], config=spec.get("config") or {},
                           secrets={"api_key": UPSTREAM_KEY}, model=spec["model"])
    outcome = checks.test_connection(s, timeout=5)
    assert (outcome.ok, outcome.error_class) == (False, "blocked"), outcome.message
    assert target.url in outcome.message
    if checks.has_live_listing(spec["provider"]):
        with pytest.raises(checks.ProviderError) as caught:
            checks.list_models(s, timeout=5)
        assert caught.value.error_class == "blocked"
    assert target.request_count == 0


def test_a_redirecting_oauth_token_url_is_blocked_sync_and_async(redirecting, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    source, target = redirecting
    source.set_mode("redirect", status=307)
    args = dict(token_url=source.token_url, client_id="cid", client_secret="client-secret-0001")
    with pytest.raises(checks.ProviderError) as caught:
        oauth.get_token(**args)
    _assert_blocked(caught.value, 307, target)
    with pytest.raises(checks.ProviderError) as caught:
        asyncio.run(oauth.aget_token(**args))
    _assert_blocked(caught.value, 307, target)
    assert source.requests_to("/oauth/token")


# --- the egress check is made at the one DNS resolution ----------------------------------------

def test_the_name_is_resolved_once_checked_and_its_address_connected_to(upstream, monkeypatch):
    """A resolver that would answer differently the second time (DNS rebinding) is asked
    once per connection: aiohttp connects to the address the egress check saw."""
    real = socket.getaddrinfo
    asked = []

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            asked.append(host)
            return real("127.0.0.1" if len(asked) == 1 else "10.1.2.3", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with override_settings(LLMCONN_EGRESS_ALLOW=["127.0.0.0/8"]):
        async def run():
            response = await transport.send(
                "GET", f"http://rebind.test:{upstream.port}/v1/models",
                headers={"authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=5)
            try:
                return response.status, await transport.read_body(response, 1 << 20)
            finally:
                response.release()

        status, _ = asyncio.run(run())
    assert status == 200 and asked == ["rebind.test"]
    assert upstream.last_request.headers["host"] == f"rebind.test:{upstream.port}"


def test_dns_rebinding_after_the_gateways_pre_check_is_refused(upstream, monkeypatch):
    """The gateway's pre-check sees a public address; the connection's own resolution sees
    loopback: the transport refuses it (checked at the address it would connect to)."""
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"] + ["127.0.0.1"] * 5)

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    forward._EGRESS_OK.clear()
    with override_settings(LLMCONN_EGRESS_ALLOW=[]), pytest.raises(ProviderError) as caught:
        _chat(_call(f"http://rebind.test:{upstream.port}/v1"))
    assert caught.value.error_class == "blocked" and "127.0.0.1" in caught.value.message
    assert upstream.request_count == 0


def test_an_ip_literal_is_checked_before_anything_is_sent(upstream):
    with override_settings(LLMCONN_EGRESS_ALLOW=[]), pytest.raises(ProviderError) as caught:
        _chat(_call(upstream.openai_url))
    assert caught.value.error_class == "blocked"
    assert upstream.request_count == 0


def test_the_check_and_the_connect_use_the_same_idna_encoding(monkeypatch):
    """`faß.example` is xn--fa-hia.example under IDNA 2008 (what aiohttp connects to), not
    fass.example (Python's IDNA 2003 codec): the egress check resolves the former."""
    from providers import egress

    asked = []
    monkeypatch.setattr(egress, "resolve", lambda host, port: asked.append(host) or
                        ["93.184.216.34"])
    egress.check_url("https://faß.example/v1")
    assert asked == ["xn--fa-hia.example"]
    from yarl import URL

    assert URL("https://faß.example/v1").raw_host == asked[0]


# --- time ------------------------------------------------------------------------------------

def test_a_stream_longer_than_the_timeout_that_keeps_producing_completes(upstream):
    upstream.set_mode("drip", delay_ms=1000, chunks=4)  # ~3 s, a chunk every second
    started = time.monotonic()
    chunks = _stream(_call(upstream.openai_url), timeout=2)  # gaps of 1 s, half the limit
    assert time.monotonic() - started > 2.5
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks
                   if c["choices"]) == "0 1 2 3 "
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_a_stream_silent_for_longer_than_the_timeout_is_cut_with_a_timeout(upstream):
    upstream.set_mode("drip", delay_ms=3000, chunks=3)

    async def run():
        chunks = await forward.chat_stream(call=_call(upstream.openai_url),
                                           params={"messages": HELLO}, label="t", timeout=1)
        got = []
        started = time.monotonic()
        with pytest.raises(ProviderError) as caught:
            async for chunk in chunks:
                got.append(chunk)
        return got, caught.value, time.monotonic() - started

    got, err, waited = asyncio.run(run())
    assert len(got) == 1 and (err.status, err.error_class) == (504, "timeout")
    assert waited < 2.5


def test_the_total_stream_cap_ends_an_endless_stream(upstream, settings):
    settings.LLMCONN_STREAM_MAX_SECONDS = 1
    upstream.set_mode("endless", delay_ms=100)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        _stream(_call(upstream.openai_url), timeout=5)
    assert caught.value.error_class == "timeout" and time.monotonic() - started < 4


# --- backpressure ----------------------------------------------------------------------------

def test_a_slow_reader_pauses_the_provider(upstream):
    """An endless stream of 64 KiB events, as fast as the client reads: while we read one
    event every 0.1 s for 2 s, the upstream can send only what the socket buffers and
    aiohttp's read buffer hold, not the gigabytes it could write in that time."""
    upstream.set_mode("endless", delay_ms=0)
    upstream.endless_padding = 64 * 1024

    async def run():
        chunks = await forward.chat_stream(call=_call(upstream.openai_url),
                                           params={"messages": HELLO}, label="t", timeout=5)
        for _ in range(20):
            await chunks.__anext__()
            await asyncio.sleep(0.1)
        sent = upstream.bytes_streamed
        await chunks.aclose()
        return sent

    sent = asyncio.run(run())
    assert 20 * 64 * 1024 < sent < 24 * 1024 * 1024


# --- config.extra_headers ----------------------------------------------------------------------

@pytest.mark.parametrize("provider,path,model", [
    ("openai_compatible", "/v1", "test-model"),
    ("anthropic", "/anthropic", "claude-haiku-4-5"),
])
def test_extra_headers_are_sent_on_every_call(upstream, provider, path, model):
    call = _call(upstream.url + path, provider=provider, model=model,
                 config={"extra_headers": {"X-Team": "blue", "OpenAI-Project": "p1"}})
    _chat(call)
    sent = upstream.last_request.headers
    assert (sent["x-team"], sent["openai-project"]) == ("blue", "p1")
    assert upstream.last_request.key == UPSTREAM_KEY  # the credential is still ours


@pytest.mark.parametrize("headers,problem", [
    ({"Authorization": "Bearer x"}, "cannot be set here"),
    ({"x-api-key": "k"}, "cannot be set here"),
    ({"Cookie": "a=b"}, "cannot be set here"),
    ({"Host": "evil.test"}, "cannot be set here"),
    ({"Bad Name": "v"}, "not a valid header name"),
    ({"X-Ok": "a\r\nX-Injected: 1"}, "CR, LF or NUL"),
    ("not a dict", "must be an object"),
])
def test_refused_extra_headers_are_validation_errors(headers, problem):
    from django.core.exceptions import ValidationError

    from providers.validation import validate_connection_settings

    with pytest.raises(ValidationError) as caught:
        validate_connection_settings(provider="openai_compatible", auth_method="api_key",
                                     base_url="https://llm.example/v1",
                                     config={"extra_headers": headers},
                                     secrets={"api_key": "sk-x"})
    assert problem in str(caught.value.message_dict["config"])


def test_a_ca_cert_that_is_not_pem_is_a_validation_error():
    from django.core.exceptions import ValidationError

    from providers.validation import validate_connection_settings

    with pytest.raises(ValidationError) as caught:
        validate_connection_settings(provider="openai_compatible", auth_method="api_key",
                                     base_url="https://llm.example/v1",
                                     config={"ca_cert": "hello"}, secrets={"api_key": "sk-x"})
    assert "PEM" in str(caught.value.message_dict["config"])


def test_an_oauth_token_fetch_resolves_its_host_once(upstream, monkeypatch, settings):
    """No separate pre-check lookup: the egress check is the transport's one resolution, and
    the connection goes to the address it checked (no rebinding window)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    real = socket.getaddrinfo
    asked = []

    def counting(host, *args, **kwargs):
        if host == "tokens.test":
            asked.append(host)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    token = asyncio.run(oauth.aget_token(
        token_url=f"http://tokens.test:{upstream.port}/oauth/token", client_id="test-client",
        client_secret="test-client-secret-0001"))
    assert token.startswith("tok-") and asked == ["tokens.test"]


# --- what the removed providers/h1.py was tested for, now on the transport ---------------------

@pytest.fixture
def raw_server():
    """A TCP server answering each connection with canned bytes: `raw_server([b"HTTP/1.1 ..."])`
    → port (for answers the fake upstream does not make: compressed, odd encodings)."""
    import threading

    servers = []

    def make(pieces: list[bytes]) -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        servers.append(sock)

        def serve():
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    for piece in pieces:
                        conn.sendall(piece)

        threading.Thread(target=serve, daemon=True).start()
        return sock.getsockname()[1]

    yield make
    for sock in servers:
        sock.close()


def _post(port: int, max_bytes: int = 1000) -> bytes:
    async def run():
        response = await transport.send("POST", f"http://127.0.0.1:{port}/", data=b"{}",
                                        timeout=5)
        try:
            if response.status >= 300:
                raise transport.status_error(response, await forward._bounded_error_body(
                    response))
            return await transport.read_body(response, max_bytes)
        finally:
            response.release()

    return asyncio.run(run())


def _compressed(payload: bytes, encoding: str = "gzip") -> bytes:
    import gzip
    import zlib

    body = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: "
            + encoding.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_is_decoded(raw_server, encoding):
    payload = b'{"object": "chat.completion", "choices": []}'
    assert _post(raw_server([_compressed(payload, encoding)])) == payload


def test_a_compressed_answer_past_the_cap_once_decoded_is_refused(raw_server):
    port = raw_server([_compressed(b"[" + b" " * 100_000 + b"]")])  # ~100 KB from ~150 bytes
    with pytest.raises(transport.ResponseTooLarge):
        _post(port, max_bytes=10_000)


def test_an_error_answer_keeps_its_status_retry_after_and_a_bounded_body(raw_server,
                                                                         monkeypatch):
    monkeypatch.setattr(transport, "MAX_ERROR_BODY", 10)
    port = raw_server([b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                       b"Content-Length: 40\r\n\r\n" + b"e" * 40])
    with pytest.raises(Exception) as caught:
        _post(port)
    response = caught.value.response
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.content == b""  # past the bound: not kept at all


def test_a_header_value_with_a_line_break_is_never_sent(upstream):
    async def run():
        await transport.send("POST", f"{upstream.openai_url}/chat/completions",
                             headers={"x-a": "b\r\nx-injected: 1"}, data=b"{}", timeout=5)

    with pytest.raises(ValueError):
        asyncio.run(run())
    assert upstream.request_count == 0


def test_an_event_past_the_line_cap_is_refused(upstream, monkeypatch):
    monkeypatch.setattr(transport, "MAX_LINE_BYTES", 20)
    with pytest.raises(ProviderError) as caught:
        _stream(_call(upstream.openai_url))
    assert caught.value.code == "provider_response_too_large"


@pytest.mark.parametrize("mode,status,code", [
    (401, 502, "provider_auth_failed"),
    (429, 429, "rate_limit_exceeded"),  # the provider's own code (CONTRACT.md)
    (500, 502, "server_error"),
    ("drop", 502, "provider_unreachable"),
])
def test_stream_failures_are_classified(upstream, mode, status, code):
    upstream.set_mode(mode)
    with pytest.raises(ProviderError) as caught:
        _stream(_call(upstream.openai_url))
    assert (caught.value.status, caught.value.code) == (status, code)
    if mode == 429:
        assert caught.value.retry_after == "1"


def test_nothing_listening_is_unreachable(closed_port_url):
    with pytest.raises(ProviderError) as caught:
        _stream(_call(closed_port_url))
    assert caught.value.code == "provider_unreachable"


def test_a_redirect_on_litellms_bedrock_path_is_blocked(redirecting):
    """Bedrock (SigV4 signed locally by litellm) also sends through the transport."""
    source, target = redirecting
    source.set_mode("redirect", status=307)
    call = litellm_kwargs(provider="bedrock", auth_method="aws_access_key",
                          base_url=source.url,
                          config={"aws_access_key_id": "AKIAEXAMPLE", "aws_region_name":
                                  "us-east-1"},
                          secrets={"aws_secret_access_key": "aws-secret-example"},
                          model="anthropic.claude-3-haiku-20240307-v1:0")
    with pytest.raises(ProviderError) as caught:
        _chat(call)
    _assert_blocked(caught.value, 307, target)
    assert source.request_count == 1
