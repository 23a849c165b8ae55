"""The one outbound HTTP transport: every byte llmconn sends to a provider or a token endpoint.

Built on aiohttp (a kept library, installed with litellm). Like Sentry's `net/http.py`, only
the step the library lets us replace is ours: the connector's resolver (`GuardedResolver`)
resolves the host once, checks every address against the egress policy
(providers.egress.check_host) and hands aiohttp only the checked addresses, so aiohttp
connects to an address that was checked (no second DNS lookup, no rebinding window) while TLS
still sends SNI for the name and verifies the certificate against it. IP-literal hosts (which
aiohttp never resolves) are checked in `send` before the request. Everything else (HTTP/1.1,
chunked bodies, keep-alive pools, TLS) is aiohttp's.

The policy, set here once for every caller (docs/security.md):
- redirects are never followed: `allow_redirects=False` on every request, and a 3xx answer
  raises `RedirectRefused` (error class `blocked`) naming its target; nothing is sent there;
- TLS verification is always on: system roots + certifi, plus the connection's
  `config.ca_cert` (PEM) in a context of its own (`tls_context`); a refused certificate
  raises `CertificateRefused` (error class `unreachable`) naming the problem;
- no proxies from the environment, no cookies kept between calls;
- time: `timeout` bounds the connect, the wait for the first byte and every silence between
  reads (aiohttp's sock_connect / sock_read); callers add a whole-call cap where they need one;
- bounded reads (`read_body`, `lines`) and backpressure: aiohttp stops reading from the
  socket once READ_BUFFER_BYTES wait unread, so a slow client pauses the provider.

Users of this module:
- `send` / `read_body` / `lines` (aiohttp directly): the gateway's direct OpenAI-wire calls
  (providers.forward), the fastest path (time to a stream's first line from a local upstream,
  p50: aiohttp 0.41 ms, the former hand-written providers/h1.py 0.48-0.56 ms, httpx
  1.7-2.4 ms; bench/RESULTS.md);
- `GuardedTransport` (an httpx transport over `send`): the clients handed to litellm
  (`litellm_clients`: `client=` for its httpx handler, `litellm.aclient_session` for its
  openai-SDK paths), and `httpx_client` for connection tests, model listings and OAuth /
  Azure AD token fetches (providers.checks, providers.oauth): code written against httpx
  keeps its API while its bytes leave here;
- `google_auth_request`: google-auth's transport for Vertex AI's token fetch inside litellm
  (`install_litellm` puts it in litellm's `VertexBase.refresh_auth`);
- `run_sync`: sync callers (Celery tasks, commands, the sync OAuth fetch, google-auth).

One aiohttp session per event loop (`session()`); `run_sync` closes the one it made.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
import ssl
import weakref
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver

from . import egress

READ_BUFFER_BYTES = 64 * 1024  # aiohttp pauses the socket past twice this, unread (streams)
WHOLE_BUFFER_BYTES = 1024 * 1024  # the same for answers read whole (non-streamed)
MAX_LINE_BYTES = 32 * 1024 * 1024  # one SSE line (event); more is refused
MAX_ERROR_BODY = 64 * 1024  # what is kept of an error answer's body (for classification)
MAX_CONNECTIONS = 256  # open per event loop
KEEPALIVE_SECONDS = 30

# The connection's `config.ca_cert` for calls made through litellm (which builds its requests
# itself): providers.forward / providers.checks set it around a call; `GuardedTransport` reads
# it when its request does not name one.
CA_CERT: contextvars.ContextVar[str] = contextvars.ContextVar("llmconn_ca_cert", default="")


class ResponseTooLarge(Exception):
    """An answer, SSE line or error body past its bound."""


class RedirectRefused(egress.EgressBlocked):
    """A provider or token endpoint answered with a redirect: never followed."""

    error_class = "blocked"


class CertificateRefused(Exception):
    """The server's TLS certificate failed verification (or the connection's CA is not PEM).
    The message is ours: safe to show and store."""

    error_class = "unreachable"


class GuardedResolver(AbstractResolver):
    """aiohttp's resolve step, replaced: resolve once, check every address, return only them.

    aiohttp connects to what this returns and verifies TLS against the request's host name."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(None, egress.check_host, host, port)
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}
                for address in addresses]

    async def close(self) -> None:
        return None


@lru_cache(maxsize=64)
def tls_context(ca_cert: str = "") -> ssl.SSLContext:
    """A verifying TLS context: system roots + certifi, plus `ca_cert` (PEM) when given.

    Cached per distinct PEM (building one loads the CA bundle: tens of ms of CPU)."""
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    except (ImportError, OSError):
        pass
    if ca_cert:
        try:
            context.load_verify_locations(cadata=ca_cert)
        except (ssl.SSLError, ValueError):
            raise CertificateRefused("The connection's CA certificate (config.ca_cert) is not "
                                     "a valid PEM certificate.") from None
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session() -> aiohttp.ClientSession:
    """This event loop's aiohttp session (created on first use), behind the guarded resolver."""
    loop = asyncio.get_running_loop()
    found = _SESSIONS.get(loop)
    if found is None or found.closed:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(), use_dns_cache=False, limit=MAX_CONNECTIONS,
            keepalive_timeout=KEEPALIVE_SECONDS, ssl=tls_context())
        found = _SESSIONS[loop] = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            read_bufsize=READ_BUFFER_BYTES)
    return found


async def aclose_session() -> None:
    """Close this loop's session (a loop about to end: `run_sync`, tests)."""
    found = _SESSIONS.pop(asyncio.get_running_loop(), None)
    if found is not None and not found.closed:
        await found.close()


def _check_literal(url: str) -> str:
    """The URL's host; an IP-literal host (never resolved, so never seen by the resolver) is
    checked against the egress policy here."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").strip("[]")
    except ValueError:
        raise egress.EgressBlocked(f"Refused: {url[:100]!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise egress.EgressBlocked(f"Refused: only http and https URLs may be called (got "
                                   f"{parts.scheme or 'none'!r}).")
    _check_literal_host(host, egress.policy())
    return host


@lru_cache(maxsize=256)
def _check_literal_host(host: str, policy) -> None:
    """check_address for an IP-literal host (nothing for a name); cached per host and policy
    (a refusal raises, so only allowed hosts are remembered)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    egress.check_address(host, host=host)


def _target(location: str, base: str) -> str:
    """Where a redirect points (scheme, host, port and path; never its query)."""
    from urllib.parse import urljoin

    try:
        parts = urlsplit(urljoin(base, location))
        return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]
    except ValueError:
        return location[:100]


@lru_cache(maxsize=64)
def _timeout(timeout: float, total: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, sock_connect=timeout, sock_read=timeout)


async def send(method: str, url: str, *, headers=None, data=None, timeout: float,
               total: float | None = None, ca_cert: str = "", decompress: bool = True,
               buffer: int = READ_BUFFER_BYTES) -> aiohttp.ClientResponse:
    """Send a request and return once the answer's head arrived (status < 300 or >= 400).

    The caller reads the body (`read_body`, `lines`) and must `release()` the response.
    `timeout` bounds the connect, the first byte and every later silence; `total`, when given,
    the whole exchange including reading the body (aiohttp's own deadline: a trickling answer
    cannot reset it); `buffer` is how much aiohttp reads ahead of the caller (streams: small,
    for backpressure; a whole answer read at once: larger, for throughput). Raises
    RedirectRefused for a 3xx, CertificateRefused for a refused certificate, EgressBlocked /
    LookupError from the egress policy, aiohttp's errors for the rest.
    """
    host = _check_literal(url)
    context = tls_context(ca_cert) if ca_cert else None
    kwargs = {"ssl": context} if context is not None else {}
    try:
        response = await session().request(
            method, url, headers=headers, data=data, allow_redirects=False,
            auto_decompress=decompress, read_bufsize=buffer,
            timeout=_timeout(timeout, total),
            **kwargs)
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
        raise CertificateRefused(
            f"The TLS certificate of {host} was refused ({reason}). If the server uses a "
            "private CA, add it to the connection's ca_cert (PEM).") from exc
    except aiohttp.ClientSSLError as exc:
        raise CertificateRefused(f"The TLS handshake with {host} failed: check the base URL "
                                 "and the server's certificate.") from exc
    if 300 <= response.status < 400:
        location = response.headers.get("location", "")
        status = response.status
        response.release()
        where = f" to {_target(location, url)}" if location else ""
        raise RedirectRefused(
            f"Refused: {host} answered with a redirect (HTTP {status}){where}; redirects are "
            "never followed: set the base URL to the final address.")
    return response


async def read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The whole body (decoded if the server compressed it), refusing more than `max_bytes`."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            raise ResponseTooLarge()
    return bytes(body)


async def read_httpx_body(response, max_bytes: int) -> bytes:
    """`read_body` for an httpx response streamed through `httpx_client`: the whole body,
    refusing more than `max_bytes` (ResponseTooLarge)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise ResponseTooLarge()
    return bytes(body)


async def lines(response: aiohttp.ClientResponse, max_line: int | None = None):
    """The body's lines (bytes, without the line end) as they arrive; one past `max_line`
    (default MAX_LINE_BYTES) raises ResponseTooLarge. Reads only when asked for the next line
    (backpressure)."""
    max_line = max_line or MAX_LINE_BYTES
    pending = b""
    async for data in response.content.iter_any():
        parts = (pending + data).split(b"\n")
        pending = parts.pop()
        if len(pending) > max_line or any(len(part) > max_line for part in parts):
            raise ResponseTooLarge()
        for part in parts:
            yield part[:-1] if part.endswith(b"\r") else part
    if pending:
        yield pending


_DRAINING: set = set()
DRAIN_SECONDS = 1.0


def release_after_drain(response: aiohttp.ClientResponse) -> None:
    """Release a response whose content the caller has all of (`data: [DONE]`) but whose
    message may not have ended yet: read its end in the background (up to DRAIN_SECONDS and
    MAX_ERROR_BODY bytes) so the connection can go back to the pool instead of closing."""
    if response.content.is_eof():
        response.release()
        return

    async def drain():
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                seen = 0
                while seen <= MAX_ERROR_BODY:
                    data = await response.content.readany()
                    if not data:
                        break
                    seen += len(data)
        except BaseException:  # noqa: BLE001 - anything: the connection is simply not reused
            pass
        finally:
            response.release()

    task = asyncio.get_running_loop().create_task(drain())
    _DRAINING.add(task)  # (the loop keeps only a weak reference to a task)
    task.add_done_callback(_DRAINING.discard)


def status_error(response: aiohttp.ClientResponse, body: bytes) -> httpx.HTTPStatusError:
    """httpx's error for a non-2xx answer (status, headers, bounded body): providers.errors
    reads the status and Retry-After from it, whichever client made the call."""
    request = httpx.Request(response.method, str(response.url))
    answer = httpx.Response(response.status, headers=list(response.headers.items()),
                            content=body, request=request)
    return httpx.HTTPStatusError(f"HTTP {response.status}", request=request, response=answer)


# --- httpx on top (litellm, the openai SDK, tests, listings, token fetches) -----------------

class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self):
        try:
            with _mapped():
                async for chunk in self._response.content.iter_chunked(16 * 1024):
                    yield chunk
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.release()


class _mapped:
    """aiohttp's errors as httpx's (what litellm, the openai SDK and providers.errors expect);
    our own refusals pass through unchanged."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (CertificateRefused, egress.EgressBlocked,
                                           LookupError, httpx.HTTPError)):
            return False
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            raise httpx.ConnectTimeout(str(exc) or "connect timeout") from exc
        if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
            raise httpx.ReadTimeout(str(exc) or "read timeout") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise httpx.ConnectError(str(exc)) from exc
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
            raise httpx.RemoteProtocolError(str(exc) or "server disconnected") from exc
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        return False


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose every request is made by `send` (the policy above).

    `ca_cert`: the connection's extra CA (else the CA_CERT context variable's)."""

    def __init__(self, ca_cert: str = ""):
        self.ca_cert = ca_cert

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        timeout = max((t for t in (timeouts.get("connect"), timeouts.get("read")) if t),
                      default=None) or 600.0
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if k.lower() not in ("transfer-encoding", "host")]
        with _mapped():
            response = await send(request.method, str(request.url), headers=headers,
                                  data=data, timeout=timeout,
                                  ca_cert=self.ca_cert or CA_CERT.get(), decompress=False)
        return httpx.Response(response.status, headers=list(response.headers.items()),
                              stream=_Body(response), request=request)


def httpx_client(*, timeout: float = 60.0, ca_cert: str = "") -> httpx.AsyncClient:
    """An httpx.AsyncClient over GuardedTransport (never follows redirects)."""
    return httpx.AsyncClient(transport=GuardedTransport(ca_cert), follow_redirects=False,
                             trust_env=False, timeout=timeout)


_LITELLM: dict[str, object] = {}


def litellm_clients():
    """(AsyncHTTPHandler, httpx.AsyncClient) for litellm, both over GuardedTransport; built
    once per process (the transport picks the running loop's session per request).

    The handler goes in `client=` for the providers litellm calls through its own httpx
    handler (Anthropic, Gemini, Vertex, Bedrock...); the client is set as
    `litellm.aclient_session`, which the openai SDK paths (Azure, OpenAI-wire through
    litellm) use when no `client=` is given."""
    if not _LITELLM:
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        client = httpx.AsyncClient(transport=GuardedTransport(), follow_redirects=False,
                                   trust_env=False, timeout=600.0)
        handler = AsyncHTTPHandler(transport=GuardedTransport(), follow_redirects=False,
                                   timeout=600.0)
        _LITELLM.update(handler=handler, client=client)
    return _LITELLM["handler"], _LITELLM["client"]


# --- google-auth (Vertex AI's access token, fetched inside litellm) -------------------------

MAX_TOKEN_BYTES = 1024 * 1024  # a token endpoint's answer; more is refused
GOOGLE_AUTH_TIMEOUT = 120.0  # google-auth's own default for its requests adapter

_GOOGLE_REQUEST: list = []


def google_auth_request():
    """A google-auth transport (`google.auth.transport.Request`) whose requests are made by
    `httpx_client`: litellm has google-auth fetch Vertex's token with the `requests` library
    (no egress check at connect, redirects followed, other TLS roots), which the contract
    ("Outbound calls") forbids. Any failure, a refused redirect or destination included, is
    raised as google-auth's TransportError with ours as its cause (providers.errors reads the
    cause: "blocked", "unreachable"...). google-auth is imported on first use (litellm's
    Vertex path needs it anyway)."""
    if not _GOOGLE_REQUEST:
        from google.auth import exceptions
        from google.auth.transport import Request, Response

        class GuardedResponse(Response):
            def __init__(self, status, headers, data):
                self._status, self._headers, self._data = status, headers, data

            status = property(lambda self: self._status)
            headers = property(lambda self: self._headers)
            data = property(lambda self: self._data)

        class GuardedRequest(Request):
            def __call__(self, url, method="GET", body=None, headers=None, timeout=None,
                         **kwargs):
                timeout = float(timeout or GOOGLE_AUTH_TIMEOUT)
                ca_cert = CA_CERT.get()  # (read here: run_sync may run it in another thread)

                async def fetch():
                    async with asyncio.timeout(timeout), \
                            httpx_client(timeout=timeout, ca_cert=ca_cert) as http, \
                            http.stream(method, url, content=body, headers=headers) as answer:
                        data = await read_httpx_body(answer, MAX_TOKEN_BYTES)
                        return GuardedResponse(answer.status_code, dict(answer.headers), data)

                try:
                    return run_sync(fetch())
                except Exception as exc:
                    raise exceptions.TransportError(str(exc) or type(exc).__name__) from exc

        _GOOGLE_REQUEST.append(GuardedRequest)
    return _GOOGLE_REQUEST[0]()


def _refresh_auth(self, credentials) -> None:
    """litellm's `VertexBase.refresh_auth` (1.106.2), with `google_auth_request()` in place of
    `google.auth.transport.requests.Request()`; the same lock (see litellm's comment there:
    refreshes of one credentials object must not run concurrently)."""
    with self._sync_refresh_lock:
        credentials.refresh(google_auth_request())


def install_litellm(litellm) -> None:
    """Route litellm's openai-SDK paths and Vertex's token fetch through the transport (called
    once, on import)."""
    _, client = litellm_clients()
    litellm.aclient_session = client
    litellm.disable_aiohttp_transport = True  # (its own aiohttp sessions are never used)
    # Vertex AI: every refresh of a Google access token (chat, streams, embeddings, tests) goes
    # through VertexBase.refresh_auth; ours sends it through the transport (contract).
    from litellm.llms.vertex_ai.vertex_llm_base import VertexBase

    VertexBase.refresh_auth = _refresh_auth


def run_sync(coro):
    """Run a coroutine from sync code (Celery tasks, commands), even under a running loop;
    the loop's session is closed when it ends."""
    async def main():
        try:
            return await coro
        finally:
            await aclose_session()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _new_loop_run(main())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_new_loop_run, main()).result()


def _new_loop_run(coro):
    # uvloop (installed with uvicorn[standard]) when available: a health sweep of 1,000
    # connections spends most of its CPU in the event loop.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
