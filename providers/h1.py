"""A lean HTTP/1.1 client for the gateway's direct OpenAI-wire calls (JSON and SSE).

httpx (httpcore over anyio) takes 1-2 ms from sending a request to the first streamed line
from a local upstream (and ~0.6 ms for a whole small JSON answer); this client, an asyncio
Protocol fed by httptools' response parser (the one uvicorn uses), takes ~0.1 ms. Only
`providers.gateway` (direct chat, streamed chat and embeddings) uses it: `post_stream` for SSE,
`post` for a whole JSON answer. Connection tests, model listings and OAuth token fetches stay
on httpx (providers.egress.guarded_async_client), where a millisecond does not matter.

What it keeps from the httpx path:
- egress: every new connection resolves the host once, checks every address
  (providers.egress.check_host, in a thread) and connects to a checked address: no second DNS
  lookup (rebinding cannot slip in); https verifies the certificate for the host name
  (server_hostname) with the shared CA context; never a proxy, never a redirect;
- errors raise httpx's exception classes (ConnectError, RemoteProtocolError, ReadError,
  HTTPStatusError with the status, headers and a bounded body), so providers.errors and
  providers.gateway.classify map them exactly as before; the caller's single deadline
  (asyncio.timeout_at) bounds the whole exchange;
- bounds: one SSE line (one event), an error body or a whole answer past MAX_LINE_BYTES /
  MAX_ERROR_BODY / the caller's max_bytes raises ResponseTooLarge (also after gzip/deflate
  decoding, for a server that compresses though we never ask it to);
- keep-alive pooling per event loop: a connection whose response was read to its end goes
  back to an idle list (per scheme, host, port) for KEEPALIVE_SECONDS; at most
  MAX_CONNECTIONS open per loop (more requests wait for one).

Chunked transfer decoding, content-length and close-delimited bodies are httptools'.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from urllib.parse import urlsplit

import httptools
import httpx

MAX_CONNECTIONS = 256  # open per event loop
MAX_IDLE = 32  # idle keep-alive connections per (scheme, host, port)
KEEPALIVE_SECONDS = 30
MAX_LINE_BYTES = 32 * 1024 * 1024  # one SSE line (event); more is refused
MAX_ERROR_BODY = 64 * 1024  # what is kept of an error answer's body (for classification)
MAX_HEADER_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0  # wait for the end of a message after its last event, to keep the connection


class ResponseTooLarge(Exception):
    """An SSE line or error body past its bound."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; responses are parsed by httptools as bytes arrive."""

    def __init__(self, key: tuple):
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._exc: BaseException | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.body = bytearray()
        self.received = 0

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:  # also a callback's error (headers too large)
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response ({type(exc).__name__})"))
        self._wake()

    def eof_received(self):
        return False  # close the transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.complete and self._exc is None:
            if self.headers_done and not self.keep_alive \
                    and not _has_length(self.headers):
                self.complete = True  # a close-delimited body ends with the connection
            else:
                self._exc = httpx.RemoteProtocolError(
                    "Server disconnected without sending a complete response.")
        self._wake()

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise ResponseTooLarge()
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # (llhttp forgets it once complete)
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    # ours
    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until more data, the end of the message, or an error."""
        if self._exc is not None:
            raise self._exc
        if self.closed and not self.complete:
            raise httpx.ReadError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._exc is not None:
            raise self._exc

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _has_length(headers) -> bool:
    return any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)


class _Pool:
    """The connections of one event loop."""

    def __init__(self):
        self.idle: dict[tuple, list[_Connection]] = {}
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    def take(self, key: tuple) -> _Connection | None:
        conns = self.idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_SECONDS \
                    and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    def give(self, conn: _Connection) -> None:
        conns = self.idle.setdefault(conn.key, [])
        if len(conns) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_DRAINING: set = set()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _Pool()
    return pool


def _ssl_context() -> ssl.SSLContext:
    from .egress import _default_ssl_context

    return _default_ssl_context()


async def _connect(scheme: str, host: str, port: int) -> _Connection:
    """Resolve, check every address, connect to a checked one (TLS for https)."""
    from .egress import check_host

    loop = asyncio.get_running_loop()
    addresses = await loop.run_in_executor(None, check_host, host, port)
    key = (scheme, host, port)
    last: BaseException | None = None
    for address in addresses:
        conn = _Connection(key)
        try:
            if scheme == "https":
                await loop.create_connection(lambda: conn, address, port, ssl=_ssl_context(),
                                             server_hostname=host)
            else:
                await loop.create_connection(lambda: conn, address, port)
            return conn
        except (OSError, ssl.SSLError) as exc:
            last = exc
    raise httpx.ConnectError(f"cannot connect to {host}") from last


def _check_header(name: str, value: str) -> None:
    if any(c in name for c in "\r\n:\0 ") or not name or any(c in value for c in "\r\n\0"):
        raise httpx.LocalProtocolError("illegal header name or value")


class Response:
    """A streamed answer: status, headers, and its body as lines (`lines()`)."""

    def __init__(self, conn: _Connection, pool: _Pool, url: str):
        self._conn, self._pool, self.url = conn, pool, url
        self.status_code = conn.status
        self.headers = httpx.Headers([(n.decode("latin-1"), v.decode("latin-1"))
                                      for n, v in conn.headers])
        self._done = False

    async def lines(self):
        """The body's lines (bytes, without the line end) as they arrive."""
        conn = self._conn
        pending = b""
        while True:
            if conn.body:
                data = pending + bytes(conn.body)
                conn.body.clear()
                parts = data.split(b"\n")
                pending = parts.pop()
                if len(pending) > MAX_LINE_BYTES or any(len(p) > MAX_LINE_BYTES for p in parts):
                    raise ResponseTooLarge()
                for part in parts:
                    yield part[:-1] if part.endswith(b"\r") else part
                continue
            if conn.complete:
                if pending:
                    yield pending
                self._finish()
                return
            await conn.wait()

    async def read_error_body(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            if len(conn.body) > MAX_ERROR_BODY:
                break
            await conn.wait()
        body = bytes(conn.body[:MAX_ERROR_BODY])
        self.aclose_now()
        return body

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.complete and not conn.closed and conn.keep_alive:
            conn._reset()
            self._pool.give(conn)
        else:
            conn.close()
        self._pool.slots.release()

    def aclose_now(self, *, drain: bool = False) -> None:
        """Release the connection: back to the pool if the answer was read to its end.

        `drain`: the caller saw the end of the content (`data: [DONE]`) but not yet the end of
        the message (the last chunk's terminator): wait for it in the background, up to
        DRAIN_SECONDS and MAX_ERROR_BODY bytes, so the connection can be kept alive."""
        if self._done:
            return
        conn = self._conn
        if not conn.complete and not conn.closed and drain:
            task = asyncio.get_running_loop().create_task(self._drain())
            _DRAINING.add(task)  # (the loop keeps only a weak reference to a task)
            task.add_done_callback(_DRAINING.discard)
            return
        if not conn.complete:
            conn.close()
        self._finish()

    def __del__(self):
        # Never started or never closed (a caller that went away first): do not leak the
        # connection or its slot.
        if not self._done:
            self._done = True
            try:
                self._conn.close()
                self._pool.slots.release()
            except RuntimeError:  # its event loop is closed: nothing is left to release
                pass

    async def _drain(self) -> None:
        conn = self._conn
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while not conn.complete and len(conn.body) <= MAX_ERROR_BODY:
                    await conn.wait()
        except BaseException:  # noqa: BLE001 - anything: the connection is not reused
            pass
        if not conn.complete:
            conn.close()
        self._finish()


def _request(url: str, headers: dict, body: bytes) -> tuple[tuple, bytes]:
    """((scheme, host, port), the request's bytes) of a POST; httpx's errors for a bad URL or
    header."""
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme, parts.port
    except ValueError as exc:
        raise httpx.UnsupportedProtocol("invalid URL") from exc
    if scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise httpx.UnsupportedProtocol("no host")
    port = port or (443 if scheme == "https" else 80)
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    authority = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {target} HTTP/1.1", f"host: {authority}",
             f"content-length: {len(body)}"]
    for name, value in headers.items():
        name, value = str(name), str(value)
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise httpx.LocalProtocolError("header values must be latin-1") from None
    return (scheme, host, port), head + body


async def post_stream(url: str, headers: dict, body: bytes) -> Response:
    """POST `body` and return once the answer's headers arrived (any status).

    The caller bounds the time (asyncio.timeout_at); the Response must be closed with
    `aclose_now()` or read to its end. A kept-alive connection the server closed before
    answering is replaced by a new one once (no byte of an answer was received).
    """
    key, request = _request(url, headers, body)
    scheme, host, port = key
    pool = _pool()
    await pool.slots.acquire()
    try:
        for _ in range(2):
            conn = pool.take(key)
            reused = conn is not None
            if conn is None:
                conn = await _connect(scheme, host, port)
            try:
                conn.transport.write(request)
                while not conn.headers_done:
                    await conn.wait()
            except (httpx.RemoteProtocolError, httpx.ReadError):
                conn.close()
                if reused and conn.received == 0:
                    continue  # a stale keep-alive connection: once more on a new one
                raise
            except BaseException:
                conn.close()
                raise
            return Response(conn, pool, url)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    except BaseException:
        pool.slots.release()
        raise


async def post(url: str, headers: dict, body: bytes, *, max_bytes: int) -> bytes:
    """POST `body` and return the whole body of a 2xx answer (gzip or deflate decoded).

    A non-2xx answer raises httpx.HTTPStatusError (status_error: status, headers, a bounded
    body); a body past `max_bytes` (as sent or decoded) raises ResponseTooLarge. The caller
    bounds the time of the whole exchange (asyncio.timeout), so a trickling answer cannot
    reset it read by read. The connection goes back to the pool once the answer was read.
    """
    response = await post_stream(url, headers, body)
    if response.status_code >= 300:
        raise status_error(response, await response.read_error_body())
    conn = response._conn
    try:
        while not conn.complete:
            if len(conn.body) > max_bytes:
                raise ResponseTooLarge()
            await conn.wait()
        if len(conn.body) > max_bytes:
            raise ResponseTooLarge()
        raw = bytes(conn.body)
    finally:
        response.aclose_now()  # back to the pool if read to its end, else closed
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        raw = _decompress(raw, encoding, max_bytes)
    elif encoding not in ("", "identity"):
        raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
    return raw


def _decompress(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """A gzip/deflate body, decoded up to max_bytes (a small bomb cannot fill the memory)."""
    import zlib

    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    try:
        decoder = zlib.decompressobj(wbits)
        out = decoder.decompress(raw, max_bytes + 1)
    except zlib.error:
        if encoding != "deflate":
            raise httpx.DecodingError("invalid gzip body") from None
        try:  # "deflate" bodies are sometimes raw deflate streams, without the zlib header
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            out = decoder.decompress(raw, max_bytes + 1)
        except zlib.error:
            raise httpx.DecodingError("invalid deflate body") from None
    if len(out) > max_bytes:
        raise ResponseTooLarge()
    return out


def status_error(response: Response, body: bytes) -> httpx.HTTPStatusError:
    """httpx's error for a non-2xx answer (status, headers, bounded body), as the httpx path
    raised it: providers.errors reads the status and Retry-After from it."""
    request = httpx.Request("POST", response.url)
    answer = httpx.Response(response.status_code, headers=response.headers, content=body,
                            request=request)
    return httpx.HTTPStatusError(f"HTTP {response.status_code}", request=request,
                                 response=answer)
