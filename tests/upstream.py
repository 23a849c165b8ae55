"""The project's fake LLM provider: a small real HTTP server on 127.0.0.1 for tests and benchmarks.

Standard library only (no Django), so it also runs standalone:

    python -m tests.upstream --port 8900 [--key sk-test ...] [--any-key] [--model m ...] [--name up1]

Standalone it accepts only the documented key `sk-upstream-test-key-0001` (or the `--key`s
given), so a wrong key tests red as it would at a real provider; `--any-key` accepts any.

In tests use the fixtures from tests/conftest.py: `upstream` (one instance, accepts the key
`upstream.api_key`), `upstream_factory(**kwargs)` (more instances: workspace tests use two),
`closed_port_url` (a URL on which nothing listens: "connection refused").

Endpoints (paths are relative to `upstream.url`, e.g. http://127.0.0.1:PORT):

- OpenAI-compatible, base URL `upstream.openai_url` (= url + "/v1"):
  `GET /v1/models`; `POST /v1/chat/completions` (JSON, or SSE `data: {...}` chunks ending with
  `data: [DONE]` when `"stream": true`; a usage chunk when `stream_options.include_usage`;
  a tool call to the first tool when the request has `tools` and `tool_choice` is not "none");
  `POST /v1/embeddings` (floats, or base64 float32 when `encoding_format` is "base64").
  Answers carry `usage` and `model` = the requested model.
- Anthropic-style, base URL `upstream.anthropic_url` (= url + "/anthropic"):
  `POST /anthropic/v1/messages` (JSON or SSE events message_start ... message_stop; a
  `tool_use` block when the request has `tools`), `GET /anthropic/v1/models`.
- Gemini-style (Google AI Studio), base URL `upstream.gemini_url` (= url + "/gemini"), as
  litellm's `gemini/` provider calls it with an api_base: `POST /gemini/models/{model}:
  generateContent`, `:streamGenerateContent` (SSE), `:batchEmbedContents`; key in
  `x-goog-api-key`; errors as `{"error": {"code", "message", "status"}}`.
- OAuth 2.0 client credentials, `upstream.token_url` (= url + "/oauth/token"): form fields
  `grant_type=client_credentials`, `client_id`, `client_secret` (or HTTP Basic), `scope`.
  Clients are `upstream.oauth_clients` ({client_id: client_secret}); tokens live
  `upstream.token_ttl` seconds (default 3600) and are accepted as Bearer keys on every API
  endpoint until they expire. `upstream.tokens_issued` counts them; `expire_tokens()` revokes.
  Also the JWT bearer grant Google's service accounts use (`grant_type=urn:ietf:params:oauth:
  grant-type:jwt-bearer`, `assertion`: a JWT whose payload names `iss`; not verified).
- Vertex AI, base URL `upstream.url` (litellm appends Google's path to it): `POST /v1/projects/
  {p}/locations/{l}/publishers/google/models/{model}:{action}` answers as the Gemini routes.

Authentication. `api_keys` (a set) lists the accepted keys; empty means "no auth needed".
A key is accepted from `Authorization: Bearer K` (or the bare value), `x-api-key`,
`x-litellm-api-key`, `api-key` (Azure), or any header named in `key_headers` (add a custom
header name there, e.g. `upstream.key_headers.add("x-team-key")`). A request is accepted when
any presented value matches. Wrong or missing key: 401 (OpenAI or Anthropic error format).

Models. `models` (a list) is what the listings return; a chat/messages/embeddings request for
a model not in it gets 404 `model_not_found` unless `check_models` is False.

Behaviour modes, `set_mode(mode, *, status=None, delay_ms=None, times=None, path=None)`:
  "ok" (default) | 401 | 429 (with Retry-After) | 500 | "status" (answer `status`;
  message `error_message` if set) |
  "slow" (wait `delay_ms`, then answer normally) | "hang" (never answer until the server stops
  or `hang_s` passes) | "bad_json" (200 with a body that is not JSON; in streams, a broken
  chunk) | "echo_key" (error `status`, default 401, whose message contains the presented key:
  for canary tests) | "drop" (close the connection without answering) | 404 (path not found) |
  "endless" (200 that never ends: SSE chat chunks when the request has `"stream": true`, else
  an unterminated JSON body; a piece every `delay_ms`, 0 = as fast as the client reads, until
  the client goes away, the server stops or `hang_s` passes: for size caps and deadlines;
  `upstream.endless_padding = N` adds N characters to each event, `bytes_streamed` counts
  what was written: for backpressure).
  "no_usage" (no `usage` in answers, and streams never carry it whatever `stream_options`
  says, as llama.cpp's server; with `tools`, the tool call is streamed too) | "per_token" (embeddings answer one
  vector per input token, a list of lists, and ignore `encoding_format`, as a model without
  pooling does).
  `times=N` applies the mode to the next N matching requests only, then back to "ok";
  `path="/v1/chat"` limits it to paths starting with that prefix (others behave normally).
  `set_mode("ok")` or `reset()` clears it. Auth is checked before modes except "echo_key",
  "drop", "hang", "endless" and "slow" (which act first, like a broken network or upstream
  would).

  "redirect" (answer `status`, default 307, with `Location: upstream.redirect_to + path`, before
  any auth check: a provider or proxy that points elsewhere) | "drip" (a 200 stream of `chunks`
  SSE chat chunks, default 3, one every `delay_ms`, then usage and `data: [DONE]`; without
  `"stream": true` the same pieces of one JSON answer: for per-silence timeouts).

TLS. `Upstream(tls=trustme.CA(), cert_names=("localhost",))` serves HTTPS with a certificate
for `cert_names` issued by that private CA; `url` is then `https://localhost:PORT` (override
the host with `url_host=`). `upstream.ca_pem` is the CA certificate (PEM) a connection needs
in `config.ca_cert`.

Records. Every request is appended to `requests` (thread-safe, newest last) as a `Recorded`
with `.method`, `.path`, `.headers` (lower-cased names), `.body` (parsed JSON/form or raw),
`.key` (the credential presented, matched or not), `.status` (what we answered). Helpers:
`request_count`, `last_request`, `requests_to(prefix)`, `keys_seen()`, `clear_requests()`.

Two instances never share state: each is its own server with its own port and records.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets as _secrets
import socket
import struct
import threading
import re
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEFAULT_MODELS = (
    "test-model",
    "test-model-large",
    "gpt-4o-mini",
    "claude-haiku-4-5",
    "test-embedding",
    "text-embedding-3-small",
)
DEFAULT_KEY_HEADERS = ("authorization", "x-api-key", "x-litellm-api-key", "api-key",
                       "x-goog-api-key")
EMBEDDING_DIMENSIONS = 8
_MODE_ALIASES = {
    "401": "auth_error", "auth": "auth_error", "429": "rate_limit", "rate_limited": "rate_limit",
    "500": "server_error", "404": "not_found", "timeout": "hang",
}
_MODES = {"ok", "auth_error", "rate_limit", "server_error", "status", "slow", "hang",
          "bad_json", "echo_key", "drop", "not_found", "endless", "redirect", "drip", "no_usage",
          "per_token"}


@dataclass
class Recorded:
    """One request the upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: object
    key: str | None
    status: int | None = None
    at: float = field(default_factory=time.time)


@dataclass
class _Mode:
    name: str = "ok"
    status: int | None = None
    delay_ms: int = 0
    times: int | None = None
    path: str | None = None
    chunks: int = 3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A fake OpenAI/Anthropic/OAuth server; see the module docstring for its API."""

    def __init__(
        self,
        *,
        api_keys=("sk-upstream-test-key-0001",),
        models=DEFAULT_MODELS,
        name: str = "upstream",
        port: int = 0,
        host: str = "127.0.0.1",
        key_headers=DEFAULT_KEY_HEADERS,
        oauth_clients: dict | None = None,
        token_ttl: int = 3600,
        check_models: bool = True,
        hang_s: float = 120.0,
        max_records: int = 10000,
        tls=None,
        cert_names=("localhost",),
        url_host: str | None = None,
    ):
        self.api_keys: set[str] = set(api_keys or ())
        self.models: list[str] = list(models)
        self.error_message: str | None = None  # mode "status": this message instead of ours
        self.name = name
        self.key_headers: set[str] = {h.lower() for h in key_headers}
        self.oauth_clients: dict[str, str] = dict(oauth_clients or {})
        self.token_ttl = token_ttl
        self.check_models = check_models
        self.hang_s = hang_s
        self.max_records = max_records
        self.tokens_issued = 0
        self.requests: list[Recorded] = []
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self._mode = _Mode()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.upstream = self
        self._server.tls_context = None
        self.redirect_to = ""
        self.endless_padding = 0  # extra characters per "endless" stream event
        self.bytes_streamed = 0  # body bytes written by "endless" / "drip" answers
        self.ca_pem = ""
        self._url_host = url_host or ("localhost" if tls is not None else "127.0.0.1")
        self._scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.issue_cert(*cert_names).configure_cert(context)
            self._server.tls_context = context
            self.ca_pem = tls.cert_pem.bytes().decode()
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    # --- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._url_host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"{self.url}/anthropic"

    @property
    def gemini_url(self) -> str:
        return self.url + "/gemini"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def api_key(self) -> str | None:
        """One accepted key (the first, sorted), or None when no auth is needed."""
        return sorted(self.api_keys)[0] if self.api_keys else None

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> Upstream:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"upstream-{self.name}-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases "hang" handlers
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- configuration ---------------------------------------------------------------------
    def set_mode(self, mode="ok", *, status: int | None = None, delay_ms: int | None = None,
                 times: int | None = None, path: str | None = None, chunks: int = 3) -> None:
        """Change how the next requests are answered (see the module docstring)."""
        name = _MODE_ALIASES.get(str(mode), str(mode))
        if name not in _MODES:
            raise ValueError(f"unknown upstream mode {mode!r}; one of {sorted(_MODES)}")
        if name == "status" and not status:
            raise ValueError("mode 'status' needs status=<int>")
        if name == "slow" and delay_ms is None:
            delay_ms = 1000
        with self._lock:
            self._mode = _Mode(name, status, delay_ms or 0, times, path, chunks)

    @property
    def mode(self) -> str:
        return self._mode.name

    def reset(self) -> None:
        """Back to "ok", records cleared, issued tokens kept."""
        self.set_mode("ok")
        self.clear_requests()

    def expire_tokens(self) -> None:
        """Revoke every OAuth token issued so far (the next call with one gets 401)."""
        with self._lock:
            self._tokens.clear()

    # --- records ---------------------------------------------------------------------------
    @property
    def request_count(self) -> int:
        return len(self.requests)

    @property
    def last_request(self) -> Recorded | None:
        return self.requests[-1] if self.requests else None

    def requests_to(self, prefix: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.path.startswith(prefix)]

    def keys_seen(self) -> list[str]:
        return [r.key for r in list(self.requests) if r.key]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- internals used by the handler -----------------------------------------------------
    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)
            if len(self.requests) > self.max_records:
                del self.requests[: len(self.requests) - self.max_records]

    def _take_mode(self, path: str) -> _Mode:
        with self._lock:
            mode = self._mode
            if mode.name == "ok" or (mode.path and not path.startswith(mode.path)):
                return _Mode()
            if mode.times is not None:
                mode.times -= 1
                if mode.times <= 0:
                    self._mode = _Mode()
            return mode

    def _key_ok(self, presented: list[str]) -> bool:
        if not self.api_keys:
            return True
        now = time.time()
        with self._lock:
            for value in presented:
                if value in self.api_keys:
                    return True
                expiry = self._tokens.get(value)
                if expiry is not None and expiry > now:
                    return True
        return False

    def _issue_token(self) -> str:
        token = f"tok-{_secrets.token_hex(12)}"
        with self._lock:
            self._tokens[token] = time.time() + self.token_ttl
            self.tokens_issued += 1
        return token


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    upstream: Upstream
    tls_context = None

    def get_request(self):
        sock, address = super().get_request()
        if self.tls_context is not None:  # the handshake happens on the handler's first read
            sock = self.tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address):
        import ssl
        import sys

        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return  # a client that refused our certificate, or went away
        super().handle_error(request, client_address)


def _properties_example(schema: dict) -> dict:
    """Arguments for a tool call that fit the tool's JSON schema well enough for tests."""
    props = (schema or {}).get("properties") or {}
    example = {}
    for key, spec in props.items():
        kind = (spec or {}).get("type")
        example[key] = {"integer": 1, "number": 1.5, "boolean": True, "array": [],
                        "object": {}}.get(kind, "test")
    return example


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so benchmarks measure us, not TCP set-up
    # Headers and body go out in separate writes: with Nagle's algorithm on, the second waits
    # for the client's delayed ACK (~40 ms per answer on Linux).
    disable_nagle_algorithm = True
    server_version = "llmconn-test-upstream/1"
    timeout = 30  # idle keep-alive connections go away
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence stderr per request
        pass

    @property
    def up(self) -> Upstream:
        return self.server.upstream

    # --- dispatch --------------------------------------------------------------------------
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = b""
        length = int(headers.get("content-length") or 0)
        if length:
            raw = self.rfile.read(length)
        body: object = raw
        if raw:
            ctype = headers.get("content-type", "")
            try:
                if "json" in ctype or raw[:1] in (b"{", b"["):
                    body = json.loads(raw)
                elif "x-www-form-urlencoded" in ctype:
                    body = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
            except (ValueError, UnicodeDecodeError):
                body = raw
        presented = self._presented_keys(headers)
        rec = Recorded(method, path, headers, body, presented[0] if presented else None)
        self.up._record(rec)
        self._rec = rec
        self._anthropic = path.startswith("/anthropic")

        mode = self.up._take_mode(path)
        if mode.name == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode.name == "hang":
            self.up._stopping.wait(self.up.hang_s)
            self.close_connection = True
            return
        if mode.name == "endless":
            return self._endless(body, mode.delay_ms)
        if mode.name == "redirect":
            return self._send(mode.status or 307, b"", extra_headers={
                "Location": f"{self.up.redirect_to}{self.path}"})
        if mode.name == "drip":
            return self._drip(body, mode.delay_ms, mode.chunks)
        if mode.name == "slow":
            time.sleep(mode.delay_ms / 1000)
        if mode.name == "echo_key":
            shown = rec.key or "(none)"
            return self._error(mode.status or 401, f"Incorrect API key provided: {shown}.",
                               "invalid_api_key")

        if path == "/oauth/token" and method == "POST":
            if mode.name == "not_found":
                return self._error(404, f"Not found: {method} {path}", "not_found")
            if self._mode_error(mode):
                return
            return self._oauth_token(body if isinstance(body, dict) else {}, headers)

        self._mode_name = mode.name
        if path.startswith("/gemini/models/") and method == "POST":
            return self._gemini(path, body, presented, mode)
        vertex = _VERTEX_PATH.match(path)
        if vertex and method == "POST":
            return self._gemini("/gemini/models/" + vertex.group(1), body, presented, mode)
        routes = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/anthropic/v1/models"): self._anthropic_models,
            ("POST", "/anthropic/v1/messages"): self._messages,
        }
        route = routes.get((method, path))
        if route is None or mode.name == "not_found":
            return self._error(404, f"Not found: {method} {path}", "not_found")
        if not self.up._key_ok(presented):
            return self._error(401, "Invalid or missing API key.", "invalid_api_key")
        if self._mode_error(mode):
            return
        payload = body if isinstance(body, dict) else {}
        if method == "POST" and not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object.", "invalid_json")
        model = payload.get("model")
        if method == "POST" and self.up.check_models and model not in self.up.models:
            return self._error(404, f"The model '{model}' does not exist.", "model_not_found")
        route(payload, bad_json=mode.name == "bad_json")

    def _mode_error(self, mode: _Mode) -> bool:
        """Answer with the error the mode asks for; False when the mode is not an error mode."""
        if mode.name == "auth_error":
            self._error(401, "Invalid or missing API key.", "invalid_api_key")
        elif mode.name == "rate_limit":
            self._error(429, "Rate limit reached; slow down.", "rate_limit_exceeded",
                        extra_headers={"Retry-After": "1"})
        elif mode.name == "server_error":
            self._error(500, "The upstream had an internal error.", "server_error")
        elif mode.name == "status":
            self._error(mode.status, self.up.error_message or f"Upstream answered {mode.status}.",
                        "upstream_status")
        else:
            return False
        return True

    def _presented_keys(self, headers: dict) -> list[str]:
        values = []
        for name in sorted(self.up.key_headers):
            value = headers.get(name)
            if not value:
                continue
            values.append(value[7:].strip() if value.lower().startswith("bearer ") else value)
            if value.lower().startswith("bearer "):
                values.append(value)
        return values

    # --- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype="application/json", extra_headers=None):
        self._rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data, bad_json: bool = False, extra_headers=None):
        body = b'{"id": "broken", "choices": [' if bad_json else json.dumps(data).encode()
        self._send(status, body, extra_headers=extra_headers)

    def _error(self, status: int, message: str, code: str, extra_headers=None):
        if self._anthropic:
            kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                    400: "invalid_request_error"}.get(status, "api_error")
            data = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            kind = {401: "invalid_request_error", 404: "invalid_request_error",
                    429: "requests", 400: "invalid_request_error"}.get(status, "server_error")
            data = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self._json(status, data, extra_headers=extra_headers)

    def _start_stream(self):
        self._rec.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, text: str):
        data = text.encode()
        self.up.bytes_streamed += len(data)
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _endless(self, body, delay_ms: int) -> None:
        """A 200 whose body never ends (mode "endless")."""
        payload = body if isinstance(body, dict) else {}
        stream = bool(payload.get("stream"))
        self._rec.status = 200
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if stream:
            chunk = {"id": "chatcmpl-endless", "object": "chat.completion.chunk", "created": 0,
                     "model": payload.get("model") or "test-model",
                     "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
            if self.up.endless_padding:
                chunk["padding"] = "p" * self.up.endless_padding
            piece = f"data: {json.dumps(chunk)}\n\n"
        else:
            piece = '{"id": "endless", "object": "model"}, ' * 50
        deadline = time.monotonic() + self.up.hang_s
        try:
            if not stream:
                self._chunk('{"object": "list", "choices": [], "data": [')
            while not self.up._stopping.is_set() and time.monotonic() < deadline:
                self._chunk(piece)
                if delay_ms:
                    self.up._stopping.wait(delay_ms / 1000)
        except OSError:  # the client stopped reading and closed: what a size cap does
            pass

    def _drip(self, body, delay_ms: int, chunks: int) -> None:
        """A finite 200 whose pieces come `delay_ms` apart (mode "drip")."""
        payload = body if isinstance(body, dict) else {}
        model = payload.get("model") or "test-model"
        if not payload.get("stream"):
            self._start_stream()
            self._chunk('{"id": "chatcmpl-drip", "object": "chat.completion", ')
            for _ in range(chunks):
                if self.up._stopping.wait(delay_ms / 1000):
                    return
                self._chunk(" ")
            self._chunk(json.dumps({"created": 0, "model": model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "drip"},
                 "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                          "total_tokens": 2}})[1:])
            return self._end_stream()
        self._start_stream()
        try:
            for index in range(chunks):
                if index and self.up._stopping.wait(delay_ms / 1000):
                    return
                chunk = {"id": "chatcmpl-drip", "object": "chat.completion.chunk",
                         "created": 0, "model": model,
                         "choices": [{"index": 0, "delta": {"content": f"{index} "},
                                      "finish_reason": None}]}
                self._chunk(f"data: {json.dumps(chunk)}\n\n")
            last = {"id": "chatcmpl-drip", "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": 1, "completion_tokens": chunks,
                              "total_tokens": chunks + 1}}
            self._chunk(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n")
            self._end_stream()
        except OSError:
            pass

    def _reply_text(self) -> str:
        return f"Hello from {self.up.name}."

    @staticmethod
    def _count_tokens(messages) -> int:
        text = json.dumps(messages or "")
        return max(1, len(text) // 4)

    # --- OpenAI ----------------------------------------------------------------------------
    def _models(self, payload, bad_json=False):
        data = {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": self.up.name}
            for m in self.up.models
        ]}
        self._json(200, data, bad_json)

    def _chat(self, payload, bad_json=False):
        model = payload.get("model")
        prompt_tokens = self._count_tokens(payload.get("messages"))
        tools = payload.get("tools") or []
        tool_call = None
        if tools and payload.get("tool_choice") != "none":
            fn = (tools[0] or {}).get("function") or {}
            tool_call = {"id": f"call_{_secrets.token_hex(6)}", "type": "function",
                         "function": {"name": fn.get("name", "tool"),
                                      "arguments": json.dumps(_properties_example(fn.get("parameters")))}}
        text = self._reply_text()
        completion_tokens = max(1, min(len(text.split()), payload.get("max_tokens") or 1000))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        cid = f"chatcmpl-{_secrets.token_hex(8)}"
        created = int(time.time())
        finish = "tool_calls" if tool_call else "stop"
        if not payload.get("stream"):
            message = {"role": "assistant", "content": None if tool_call else text}
            if tool_call:
                message["tool_calls"] = [tool_call]
            data = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage}
            if self._mode_name == "no_usage":
                del data["usage"]
            return self._json(200, data, bad_json)

        def chunk(delta, finish_reason=None, **extra):
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish_reason}], **extra}

        events = [chunk({"role": "assistant", "content": ""})]
        if tool_call:
            events.append(chunk({"tool_calls": [{"index": 0, "id": tool_call["id"],
                                                 "type": "function",
                                                 "function": {"name": tool_call["function"]["name"],
                                                              "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {
                "arguments": tool_call["function"]["arguments"]}}]}))
        else:
            words = text.split(" ")
            for i, word in enumerate(words):
                events.append(chunk({"content": word if i == 0 else " " + word}))
        events.append(chunk({}, finish))
        if (payload.get("stream_options") or {}).get("include_usage") \
                and self._mode_name != "no_usage":
            events.append({"id": cid, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": usage})
        self._start_stream()
        for i, event in enumerate(events):
            if bad_json and i == 1:
                self._chunk("data: {this is not json\n\n")
                continue
            self._chunk(f"data: {json.dumps(event)}\n\n")
        self._chunk("data: [DONE]\n\n")
        self._end_stream()

    def _embeddings(self, payload, bad_json=False):
        inputs = payload.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                       and isinstance(inputs[0], int)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return self._error(400, "input must be a string or a list.", "invalid_input")
        as_base64 = payload.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            seed = sum(str(item).encode()) % 97
            vector = [round(((seed + j * 7) % 13) / 13.0, 4) for j in range(EMBEDDING_DIMENSIONS)]
            if self._mode_name == "per_token":  # one vector per (whitespace) token, floats
                words = str(item).split() or [""]
                data.append({"object": "embedding", "index": i, "embedding": [
                    [round(v + k / 100, 4) for v in vector] for k in range(len(words))]})
                continue
            embedding = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                         if as_base64 else vector)
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = self._count_tokens(inputs)
        self._json(200, {"object": "list", "data": data, "model": payload.get("model"),
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, bad_json)

    # --- Gemini (AI Studio) -----------------------------------------------------------------
    def _gemini_error(self, status: int, message: str, kind: str):
        self._json(status, {"error": {"code": status, "message": message, "status": kind}})

    def _gemini(self, path: str, body, presented: list[str], mode: _Mode) -> None:
        model, _, action = path[len("/gemini/models/"):].partition(":")
        if not self.up._key_ok(presented):
            return self._gemini_error(400, "API key not valid. Please pass a valid API key.",
                                      "INVALID_ARGUMENT")
        if mode.name == "auth_error":
            return self._gemini_error(403, "Permission denied: the API key is not valid.",
                                      "PERMISSION_DENIED")
        if mode.name == "rate_limit":
            return self._gemini_error(429, "Resource has been exhausted.", "RESOURCE_EXHAUSTED")
        if mode.name == "status":
            return self._gemini_error(mode.status, self.up.error_message
                                      or f"Upstream answered {mode.status}.", "FAILED_PRECONDITION")
        if mode.name == "server_error":
            return self._gemini_error(500, "Internal error.", "INTERNAL")
        if self.up.check_models and model not in self.up.models:
            return self._gemini_error(404, f"models/{model} is not found.", "NOT_FOUND")
        payload = body if isinstance(body, dict) else {}
        if action == "batchEmbedContents":
            values = [[round(((sum(json.dumps(r).encode()) + j * 7) % 13) / 13.0, 4)
                       for j in range(EMBEDDING_DIMENSIONS)] for r in payload.get("requests") or []]
            return self._json(200, {"embeddings": [{"values": v} for v in values]})
        if action not in ("generateContent", "streamGenerateContent"):
            return self._gemini_error(404, f"Unknown action {action}.", "NOT_FOUND")
        prompt_tokens = self._count_tokens(payload.get("contents"))
        text = self._reply_text()
        tools = [d for t in payload.get("tools") or [] for d in t.get("functionDeclarations")
                 or t.get("function_declarations") or []]
        if tools:
            part = {"functionCall": {"name": tools[0].get("name", "tool"),
                                     "args": _properties_example(tools[0].get("parameters"))}}
        else:
            part = {"text": text}
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": len(text.split()),
                 "totalTokenCount": prompt_tokens + len(text.split())}
        final = {"candidates": [{"content": {"parts": [part], "role": "model"},
                                 "finishReason": "STOP", "index": 0}],
                 "usageMetadata": usage, "modelVersion": model}
        if action == "generateContent":
            return self._json(200, final)
        self._start_stream()
        if not tools:
            words = text.split(" ")
            for word in words[:-1]:
                self._chunk("data: " + json.dumps({"candidates": [{"content": {
                    "parts": [{"text": word + " "}], "role": "model"}, "index": 0}],
                    "modelVersion": model}) + "\r\n\r\n")
            final["candidates"][0]["content"]["parts"] = [{"text": words[-1]}]
        self._chunk("data: " + json.dumps(final) + "\r\n\r\n")
        self._end_stream()

    # --- Anthropic -------------------------------------------------------------------------
    def _anthropic_models(self, payload, bad_json=False):
        data = [{"type": "model", "id": m, "display_name": m,
                 "created_at": "2025-01-01T00:00:00Z"} for m in self.up.models]
        self._json(200, {"data": data, "has_more": False,
                         "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None}, bad_json)

    def _messages(self, payload, bad_json=False):
        model = payload.get("model")
        input_tokens = self._count_tokens(payload.get("messages"))
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice") or {}
        use_tool = bool(tools) and choice.get("type") != "none"
        text = self._reply_text()
        output_tokens = max(1, min(len(text.split()), payload.get("max_tokens") or 1000))
        mid = f"msg_{_secrets.token_hex(8)}"
        if use_tool:
            tool = tools[0] or {}
            block = {"type": "tool_use", "id": f"toolu_{_secrets.token_hex(6)}",
                     "name": tool.get("name", "tool"),
                     "input": _properties_example(tool.get("input_schema"))}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": text}
            stop = "end_turn"
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        message = {"id": mid, "type": "message", "role": "assistant", "model": model,
                   "content": [block], "stop_reason": stop, "stop_sequence": None,
                   "usage": usage}
        if not payload.get("stream"):
            return self._json(200, message, bad_json)

        start = dict(message, content=[], stop_reason=None,
                     usage={"input_tokens": input_tokens, "output_tokens": 1})
        events = [("message_start", {"type": "message_start", "message": start})]
        if use_tool:
            events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": dict(block, input={})}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": json.dumps(block["input"])}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
            events.append(("ping", {"type": "ping"}))
            for i, word in enumerate(text.split(" ")):
                events.append(("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": output_tokens}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self._start_stream()
        for i, (name, event) in enumerate(events):
            data = "{this is not json" if bad_json and i == 1 else json.dumps(event)
            self._chunk(f"event: {name}\ndata: {data}\n\n")
        self._end_stream()

    # --- OAuth -----------------------------------------------------------------------------
    def _oauth_token(self, form: dict, headers: dict):
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                pass
        self._rec.key = client_secret or self._rec.key
        if form.get("grant_type") == JWT_BEARER:
            if not _jwt_issuer(form.get("assertion") or ""):
                return self._send(400, json.dumps({"error": "invalid_grant"}).encode())
            token = self.up._issue_token()
            return self._send(200, json.dumps({"access_token": token, "token_type": "Bearer",
                                               "expires_in": self.up.token_ttl}).encode())
        if form.get("grant_type") != "client_credentials":
            return self._send(400, json.dumps({"error": "unsupported_grant_type"}).encode())
        if not client_id or self.up.oauth_clients.get(client_id) != client_secret:
            return self._send(401, json.dumps({"error": "invalid_client"}).encode())
        token = self.up._issue_token()
        data = {"access_token": token, "token_type": "Bearer", "expires_in": self.up.token_ttl}
        if form.get("scope"):
            data["scope"] = form["scope"]
        self._send(200, json.dumps(data).encode())


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_VERTEX_PATH = re.compile(r"/v1(?:beta1)?/projects/[^/]+/locations/[^/]+/publishers/google/"
                          r"models/(.+)")


def _jwt_issuer(assertion: str) -> str:
    """The `iss` of a JWT's payload (signature not verified); "" when it is not a JWT."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims.get("iss") or "")
    except (IndexError, ValueError, AttributeError):
        return ""


# The key README's First steps tell users to enter; standalone runs require it by default.
DOCUMENTED_KEY = "sk-upstream-test-key-0001"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run the llmconn test upstream standalone.")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key", action="append", default=None,
                        help=f"accepted API key (repeat); default: {DOCUMENTED_KEY}")
    parser.add_argument("--any-key", action="store_true",
                        help="accept any key (or none): no authentication at all")
    parser.add_argument("--model", action="append", default=None, help="model to offer (repeat)")
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--oauth-client", action="append", default=[],
                        help="client_id:client_secret accepted by /oauth/token (repeat)")
    args = parser.parse_args(argv)
    if args.any_key and args.key:
        parser.error("--any-key and --key exclude each other")
    keys = () if args.any_key else (args.key or (DOCUMENTED_KEY,))
    up = Upstream(api_keys=keys, models=args.model or DEFAULT_MODELS, name=args.name,
                  port=args.port, host=args.host,
                  oauth_clients=dict(c.split(":", 1) for c in args.oauth_client))
    accepts = "any key" if not keys else "key " + ", ".join(keys)
    print(f"test upstream {args.name!r} on {up.url} (OpenAI: {up.openai_url}, "
          f"Anthropic: {up.anthropic_url}), accepting {accepts}; Ctrl-C stops it", flush=True)
    try:
        up._server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        up._stopping.set()
        up._server.server_close()


if __name__ == "__main__":
    main()
