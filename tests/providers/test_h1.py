"""providers.h1: the lean HTTP/1.1 client of direct calls (egress per connection, chunked and
close-delimited bodies, compressed answers, keep-alive pool, deadline, size caps, errors as
httpx's)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from django.test import override_settings

from providers import gateway, h1
from providers.egress import EgressBlocked, check_url
from providers.gateway import ProviderCallError
from providers.params import litellm_kwargs
from tests.conftest import UPSTREAM_KEY

HELLO = [{"role": "user", "content": "Hello"}]
NO_PRIVATE = override_settings(LLMCONN_EGRESS_ALLOW=[])


def _call(base_url: str):
    return litellm_kwargs(provider="openai_compatible", auth_method="api_key", base_url=base_url,
                          config={}, secrets={"api_key": UPSTREAM_KEY}, model="test-model")


async def _collect(call: dict, timeout: float | None = None) -> list[dict]:
    chunks = await gateway.chat_stream(call=call, params={"messages": HELLO}, label="t",
                                       timeout=timeout)
    return [c async for c in chunks]


def _text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.fixture
def raw_server():
    """One-connection-at-a-time TCP server answering each request with canned byte pieces:
    `raw_server([b"HTTP/1.1 200 OK...", b"..."], close=True)` -> port."""
    servers = []

    def make(pieces: list[bytes], *, close: bool = True, pause: float = 0.01) -> int:
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
                        time.sleep(pause)
                    if not close:
                        time.sleep(5)

        threading.Thread(target=serve, daemon=True).start()
        return sock.getsockname()[1]

    yield make
    for sock in servers:
        sock.close()


def test_a_stream_is_read_and_its_connection_kept_for_the_next_call(upstream):
    call = _call(upstream.openai_url)

    async def run():
        first = await _collect(call)
        await asyncio.sleep(0.05)  # the background drain after [DONE]
        idle = [c for conns in h1._pool().idle.values() for c in conns]
        second = await _collect(call)
        await asyncio.sleep(0.05)
        again = [c for conns in h1._pool().idle.values() for c in conns]
        return first, second, idle, again

    first, second, idle, again = asyncio.run(run())
    assert _text(first) == _text(second) == "Hello from upstream."
    assert len(idle) == 1 and again == idle  # the same connection served both calls
    assert upstream.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert upstream.last_request.body["stream"] is True


def test_chunked_body_split_anywhere_is_decoded_into_lines(raw_server):
    body = b"data: {\"a\": 1}\n\ndata: {\"b\": 2}\r\n\r\ndata: [DONE]\n\n"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:7], body[7:20], body[20:]))
    wire = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
    port = raw_server([wire[:40], wire[40:45], wire[45:90], wire[90:]])

    async def run():
        response = await h1.post_stream(f"http://127.0.0.1:{port}/v1/x", {}, b"{}")
        return response.status_code, [line async for line in response.lines()]

    status, lines = asyncio.run(run())
    assert status == 200
    assert lines == [b'data: {"a": 1}', b"", b'data: {"b": 2}', b"", b"data: [DONE]", b""]


def test_a_close_delimited_body_ends_with_the_connection(raw_server):
    port = raw_server([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                       b"data: {\"x\": 1}\n\n", b"data: [DONE]\n\n"])

    async def run():
        response = await h1.post_stream(f"http://127.0.0.1:{port}/", {}, b"{}")
        return [line async for line in response.lines()]

    assert asyncio.run(run()) == [b'data: {"x": 1}', b"", b"data: [DONE]", b""]


def test_loopback_is_refused_when_not_allowed_and_nothing_is_sent(upstream):
    async def run():
        await h1.post_stream(f"{upstream.openai_url}/chat/completions", {}, b"{}")

    with NO_PRIVATE, pytest.raises(EgressBlocked):
        asyncio.run(run())
    assert upstream.request_count == 0


def test_the_gateway_stream_reports_a_refused_address_as_blocked(upstream):
    with NO_PRIVATE, pytest.raises(ProviderCallError) as caught:
        asyncio.run(_collect(_call(upstream.openai_url)))
    assert caught.value.error_class == "blocked"
    assert upstream.request_count == 0


def test_dns_rebinding_between_check_and_connect_is_caught(upstream, monkeypatch):
    """The pre-check sees a public address; the connection's own lookup sees loopback and is
    refused (it connects only to an address it checked itself)."""
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.test:{upstream.port}/v1/chat/completions"

    async def run():
        await h1.post_stream(url, {}, b"{}")

    with NO_PRIVATE:
        assert check_url(url) == ["93.184.216.34"]
        with pytest.raises(EgressBlocked):
            asyncio.run(run())
    assert upstream.request_count == 0


def test_a_host_name_is_sent_and_connected_to_its_checked_address(upstream, monkeypatch):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
        "127.0.0.1" if host == "upstream.test" else host, *a, **k))
    chunks = asyncio.run(_collect(_call(f"http://upstream.test:{upstream.port}/v1")))
    assert _text(chunks) == "Hello from upstream."
    assert upstream.last_request.headers["host"] == f"upstream.test:{upstream.port}"


def test_no_answer_within_the_deadline_is_a_timeout(upstream):
    upstream.set_mode("hang")
    with pytest.raises(ProviderCallError) as caught:
        asyncio.run(_collect(_call(upstream.openai_url), timeout=0.5))
    assert (caught.value.status, caught.value.error_class) == (504, "timeout")


def test_a_stream_trickling_past_the_deadline_is_cut_with_a_timeout(upstream):
    upstream.set_mode("endless", delay_ms=50)

    async def run():
        chunks = await gateway.chat_stream(call=_call(upstream.openai_url),
                                           params={"messages": HELLO}, label="t", timeout=0.6)
        seen = 0
        async for _ in chunks:
            seen += 1
        return seen

    with pytest.raises(ProviderCallError) as caught:
        asyncio.run(run())
    assert caught.value.error_class == "timeout"


def test_an_event_past_the_size_cap_is_refused(upstream, monkeypatch):
    monkeypatch.setattr(h1, "MAX_LINE_BYTES", 20)
    with pytest.raises(ProviderCallError) as caught:
        asyncio.run(_collect(_call(upstream.openai_url)))
    assert caught.value.code == "provider_response_too_large"


@pytest.mark.parametrize("mode,status,code", [
    (401, 502, "provider_auth_failed"),
    (429, 429, "rate_limit_exceeded"),  # the provider's own code (CONTRACT.md)
    (500, 502, "server_error"),
    ("drop", 502, "provider_unreachable"),
])
def test_stream_failures_are_classified_as_before(upstream, mode, status, code):
    upstream.set_mode(mode)
    with pytest.raises(ProviderCallError) as caught:
        asyncio.run(_collect(_call(upstream.openai_url)))
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message.startswith("Error from the provider (t)")
    if mode == 429:
        assert caught.value.retry_after == "1"


def test_nothing_listening_is_unreachable(closed_port_url):
    with pytest.raises(ProviderCallError) as caught:
        asyncio.run(_collect(_call(closed_port_url)))
    assert caught.value.code == "provider_unreachable"


def test_a_header_value_with_a_line_break_is_never_sent(raw_server):
    port = raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])

    async def run():
        await h1.post_stream(f"http://127.0.0.1:{port}/", {"x-a": "b\r\nx-injected: 1"}, b"")

    with pytest.raises(Exception) as caught:
        asyncio.run(run())
    assert type(caught.value).__name__ == "LocalProtocolError"


def _gzip_answer(payload: bytes, encoding: str = "gzip") -> bytes:
    import gzip
    import zlib

    body = gzip.compress(payload) if encoding == "gzip" else zlib.compress(payload)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: "
            + encoding.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_is_decoded(raw_server, encoding):
    payload = b'{"object": "chat.completion", "choices": []}'
    port = raw_server([_gzip_answer(payload, encoding)])
    raw = asyncio.run(h1.post(f"http://127.0.0.1:{port}/", {}, b"{}", max_bytes=1000))
    assert raw == payload


def test_a_compressed_answer_past_the_cap_once_decoded_is_refused(raw_server):
    port = raw_server([_gzip_answer(b"[" + b" " * 100_000 + b"]")])  # ~100 KB from ~150 bytes
    with pytest.raises(h1.ResponseTooLarge):
        asyncio.run(h1.post(f"http://127.0.0.1:{port}/", {}, b"{}", max_bytes=10_000))


def test_an_unknown_content_encoding_is_an_error_not_garbage(raw_server):
    port = raw_server([b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n"
                       b"\r\nxx"])
    with pytest.raises(Exception) as caught:
        asyncio.run(h1.post(f"http://127.0.0.1:{port}/", {}, b"{}", max_bytes=1000))
    assert type(caught.value).__name__ == "DecodingError"


def test_an_error_answer_raises_with_its_status_and_a_bounded_body(raw_server, monkeypatch):
    monkeypatch.setattr(h1, "MAX_ERROR_BODY", 10)
    port = raw_server([b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
                       b"Content-Length: 40\r\n\r\n" + b"e" * 40])
    with pytest.raises(Exception) as caught:
        asyncio.run(h1.post(f"http://127.0.0.1:{port}/", {}, b"{}", max_bytes=1000))
    response = caught.value.response
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert len(response.content) <= 10
