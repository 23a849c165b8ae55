"""A minimal, fast OpenAI-compatible upstream for benchmarks (asyncio + uvloop + httptools).

tests/upstream.py (the project's fake provider) is thread-per-connection Python and costs about
0.5 ms per answer: fine for tests, but at concurrency 32 it would measure itself and take CPU
from what is being measured. This one answers `POST /v1/chat/completions` (JSON, or SSE when
`"stream": true`), `POST /v1/embeddings` and `GET /v1/models` with fixed, OpenAI-shaped bodies,
in a few tens of microseconds.

    python bench/upstream.py --port 8911 [--key bench-upstream-key] [--delay-ms 200]
        [--chunks 8] [--chunk-interval-ms 2]

`--delay-ms` waits before every answer (a slow provider, for the health sweep);
streams send `--chunks` content chunks `--chunk-interval-ms` apart, then a usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httptools

WORDS = ["Hello", " from", " the", " bench", " upstream", ".", " One", " more", " word"]


def _response(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 401: b"Unauthorized", 404: b"Not Found", 400: b"Bad Request"}.get(
        status, b"Error")
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (status, reason, ctype, len(body))) + body


def _error(status: int, message: str, code: str) -> bytes:
    return _response(status, json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                                   "param": None, "code": code}}).encode())


class Server:
    """Settings shared by every connection."""

    def __init__(self, *, key: str | None, delay_ms: int, chunks: int, chunk_interval_ms: float):
        self.key = key
        self.delay = delay_ms / 1000
        self.chunks = chunks
        self.chunk_interval = chunk_interval_ms / 1000
        self.requests = 0


class Protocol(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.queue: list = []
        self.busy = False

    # asyncio
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_error(400, "bad request", "bad_request"))
            self.transport.close()

    def connection_lost(self, exc):
        self.transport = None

    # httptools callbacks
    def on_message_begin(self):
        self.url, self.headers, self.body = b"", {}, bytearray()

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.lower()] = value

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        request = (self.parser.get_method(), self.url.split(b"?", 1)[0], self.headers,
                   bytes(self.body))
        self.queue.append(request)
        if not self.busy:
            self.busy = True
            asyncio.ensure_future(self._drain())

    async def _drain(self):
        try:
            while self.queue and self.transport is not None:
                await self._answer(*self.queue.pop(0))
        finally:
            self.busy = False

    def _authorized(self, headers) -> bool:
        key = self.server.key
        if not key:
            return True
        auth = headers.get(b"authorization", b"").decode("latin-1")
        values = {auth[7:].strip() if auth.lower().startswith("bearer ") else auth,
                  headers.get(b"x-api-key", b"").decode("latin-1")}
        return key in values

    async def _answer(self, method, path, headers, raw):
        self.server.requests += 1
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        write = self.transport.write
        path = path.rstrip(b"/")
        if method == b"GET" and path == b"/v1/models":
            body = {"object": "list", "data": [{"id": "bench-model", "object": "model",
                                                "created": 0, "owned_by": "bench"}]}
            return write(_response(200, json.dumps(body).encode()))
        if method != b"POST" or path not in (b"/v1/chat/completions", b"/v1/embeddings"):
            return write(_error(404, "not found", "not_found"))
        if not self._authorized(headers):
            return write(_error(401, "Invalid API key.", "invalid_api_key"))
        try:
            payload = json.loads(raw)
        except ValueError:
            return write(_error(400, "The body must be JSON.", "invalid_json"))
        model = payload.get("model") or "bench-model"
        if path == b"/v1/embeddings":
            inputs = payload.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            body = {"object": "list", "model": model,
                    "data": [{"object": "embedding", "index": i,
                              "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}
                             for i in range(count)],
                    "usage": {"prompt_tokens": 2 * count, "total_tokens": 2 * count}}
            return write(_response(200, json.dumps(body).encode()))
        created = int(time.time())
        usage = {"prompt_tokens": 12, "completion_tokens": self.server.chunks,
                 "total_tokens": 12 + self.server.chunks}
        cid = f"chatcmpl-bench{self.server.requests}"
        if not payload.get("stream"):
            body = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "".join(WORDS[:self.server.chunks])},
                                 "finish_reason": "stop"}], "usage": usage}
            return write(_response(200, json.dumps(body).encode()))

        def event(data) -> bytes:
            text = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) \
                + b"\n\n"
            return b"%x\r\n%s\r\n" % (len(text), text)

        def chunk(delta, finish=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish}]}

        write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache"
              b"\r\nTransfer-Encoding: chunked\r\n\r\n"
              + event(chunk({"role": "assistant", "content": ""})))
        for i in range(self.server.chunks):
            if self.server.chunk_interval:
                await asyncio.sleep(self.server.chunk_interval)
            if self.transport is None:
                return
            write(event(chunk({"content": WORDS[i % len(WORDS)]})))
        tail = event(chunk({}, "stop"))
        if (payload.get("stream_options") or {}).get("include_usage"):
            tail += event({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        if self.transport is not None:
            write(tail + event(b"[DONE]") + b"0\r\n\r\n")


async def serve(args) -> None:
    server = Server(key=args.key, delay_ms=args.delay_ms, chunks=args.chunks,
                    chunk_interval_ms=args.chunk_interval_ms)
    loop = asyncio.get_running_loop()
    context = None
    if args.tls_pem:  # HTTPS with this key + certificate chain (PEM), for the HTTPS cost
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_pem)
    srv = await loop.create_server(lambda: Protocol(server), args.host, args.port, backlog=4096,
                                   ssl=context)
    scheme = "https" if context else "http"
    print(f"bench upstream on {scheme}://{args.host}:{args.port}/v1", flush=True)
    async with srv:
        await srv.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument("--key", default=None, help="accepted API key (none: no auth)")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--chunk-interval-ms", type=float, default=2.0)
    parser.add_argument("--tls-pem", default="", help="serve HTTPS with this key + cert PEM")
    args = parser.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
