"""Provider failures as the contract's error classes, with messages written by us.

Upstream error text can echo what was sent (OpenAI's "Incorrect API key provided: sk-..."), so
it never reaches a message, a log line or a stored row: `classify()` looks only at exception
types and HTTP status codes, and writes its own sentence. The gateway, which must show a
developer the provider's own explanation (CONTRACT.md, "Provider errors"), asks for it
separately with `upstream_detail()`: the provider's message, type, param and code, with every
secret this process knows scrubbed (llmconn.redaction) and at most MAX_UPSTREAM_MESSAGE
characters; it is answered to the caller, never stored or logged. It does not import litellm: it
recognises litellm's, openai's, httpx's and aiohttp's exceptions by class name along the
exception chain (`__cause__` / `__context__`), which also works for exceptions that litellm
re-wraps (a refused port arrives as `InternalServerError("Connection error.")`, STACK-NOTES.md).
"""

from __future__ import annotations

import asyncio
import json
import re

AUTH = "auth"
RATE_LIMITED = "rate_limited"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
MODEL_NOT_FOUND = "model_not_found"
BAD_REQUEST = "bad_request"
BLOCKED = "blocked"
PROVIDER_ERROR = "provider_error"
ERROR_CLASSES = (AUTH, RATE_LIMITED, UNREACHABLE, TIMEOUT, MODEL_NOT_FOUND, BAD_REQUEST, BLOCKED,
                 PROVIDER_ERROR)
# Worth trying another connection (fallbacks) after these; the others would fail there too
# or are the caller's fault.
RETRYABLE = frozenset({RATE_LIMITED, UNREACHABLE, TIMEOUT, PROVIDER_ERROR})

_TIMEOUT_NAMES = {"Timeout", "APITimeoutError", "ReadTimeout", "ConnectTimeout", "WriteTimeout",
                  "PoolTimeout", "TimeoutException", "TimeoutError", "SocketTimeoutError",
                  "ServerTimeoutError", "SoftTimeLimitExceeded"}
_CONNECT_NAMES = {"ConnectError", "ClientConnectorError", "ConnectionRefusedError",
                  "ClientConnectorDNSError", "gaierror", "ClientConnectionError"}
_DROP_NAMES = {"ReadError", "RemoteProtocolError", "ServerDisconnectedError",
               "ConnectionResetError", "ClientOSError", "ClientPayloadError", "WriteError",
               "ProtocolError", "IncompleteRead"}


# error class -> (HTTP status, code) a gateway client is answered with (CONTRACT.md, "Provider
# errors"): a provider's 401 is our 502 "provider_auth_failed", never our 401.
GATEWAY_STATUS = {
    AUTH: (502, "provider_auth_failed"),
    RATE_LIMITED: (429, "provider_rate_limited"),
    UNREACHABLE: (502, "provider_unreachable"),
    TIMEOUT: (504, "provider_timeout"),
    MODEL_NOT_FOUND: (404, "provider_model_not_found"),
    BAD_REQUEST: (400, "provider_bad_request"),
    BLOCKED: (502, "provider_blocked"),
    PROVIDER_ERROR: (502, "provider_error"),
}


class ProviderError(Exception):
    """A classified provider failure: the one error type of providers/ (tests, listings, OAuth,
    /v1 calls). `message` is ours: safe to show, store and log.

    - `error_class`: one of ERROR_CLASSES.
    - `status`, `code`: what a gateway client is answered with (GATEWAY_STATUS by default;
      providers.forward.classify refines them for /v1 calls).
    - `upstream_status`: the HTTP status the provider answered, if any.
    - `retry_after`: seconds to wait, as the Retry-After header value, if known.
    - `type`, `param`: the provider's own error type and parameter (upstream_detail), if sent.
    - `label`: the connection a /v1 call went to, set once the message is worded for a gateway
      client (providers.forward.classify, which passes such an error on unchanged).
    """

    def __init__(self, error_class: str, message: str, *, status: int | None = None,
                 code: str | None = None, upstream_status: int | None = None,
                 retry_after: str | None = None, type: str | None = None,
                 param: str | None = None, label: str | None = None):
        super().__init__(message)
        default_status, default_code = GATEWAY_STATUS.get(error_class, (502, "provider_error"))
        self.error_class = error_class
        self.message = message
        self.status = status if status is not None else default_status
        self.code = code or default_code
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.type = type
        self.param = param
        self.label = label

    def __str__(self) -> str:
        return self.message

    @property
    def should_retry(self) -> bool:
        """False when a retry cannot fix it (stored credentials, blocked destination, the
        request itself): answered with `x-should-retry: false`."""
        return self.error_class in RETRYABLE

    def as_openai(self) -> dict:
        """`{"error": {"message", "type", "code", "param"}}` as OpenAI's API answers errors."""
        return {"error": {"message": self.message, "type": self.type or "provider_error",
                          "code": self.code, "param": self.param,
                          "error_class": self.error_class}}

    def __reduce__(self):  # picklable without upstream text (Celery, multiprocessing)
        return (_rebuild, (self.error_class, self.message, self.__dict__))


def _rebuild(error_class, message, state):
    err = ProviderError(error_class, message)
    err.__dict__.update(state)
    return err


def _chain(exc: BaseException) -> list[BaseException]:
    seen, out = set(), []
    while exc is not None and id(exc) not in seen and len(out) < 20:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _status(exc: BaseException) -> int | None:
    """The HTTP status the upstream answered, if any (litellm keeps it in status_code)."""
    for item in _chain(exc):
        status = getattr(item, "status_code", None)
        if isinstance(status, int) and 100 <= status <= 599:
            return status
        response = getattr(item, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    return None


def _retry_after(exc: BaseException) -> str | None:
    """The provider's Retry-After in whole seconds, wherever litellm kept it (its own
    `response` has no headers; `litellm_response_headers` and the wrapped openai/httpx errors
    do)."""
    for item in _chain(exc):
        for headers in (getattr(item, "litellm_response_headers", None),
                        getattr(getattr(item, "response", None), "headers", None)):
            try:
                value = headers.get("retry-after") if headers is not None else None
                if value:
                    return str(max(0, int(float(str(value).strip()))))
            except (TypeError, ValueError, AttributeError):
                continue
    return None


def classify(exc: BaseException, *, host: str = "", listing: bool = False) -> ProviderError:
    """Turn any exception from a provider call into a ProviderError with our own message.

    `host` (no secrets: a host name) makes messages specific; `listing` says the call was a
    models listing, where a 404 means a wrong endpoint rather than an unknown model.
    """
    if isinstance(exc, ProviderError):
        return exc
    where = f" {host}" if host else " the provider"
    subject = host or "The provider"
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    for item in chain:
        # providers.egress.EgressBlocked, providers.transport's RedirectRefused and
        # CertificateRefused: their messages are ours.
        if getattr(item, "error_class", None) in (BLOCKED, UNREACHABLE) \
                and not isinstance(item, ProviderError):
            return ProviderError(item.error_class, str(item)[:300])
    if names & _TIMEOUT_NAMES or any(isinstance(e, asyncio.TimeoutError) for e in chain):
        return ProviderError(TIMEOUT, f"No answer from{where} within the time limit.",
                             upstream_status=408)
    if "LookupError" in names or "gaierror" in names or "ClientConnectorDNSError" in names:
        return ProviderError(UNREACHABLE, f"Could not resolve{where}: check the base URL.")
    if names & _CONNECT_NAMES:
        return ProviderError(UNREACHABLE,
                             f"Could not connect to{where}: check the base URL and that the "
                             "server is running.")
    if names & _DROP_NAMES:
        return ProviderError(UNREACHABLE,
                             f"The connection to{where} closed before an answer arrived.")
    if any(isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) for e in chain):
        return ProviderError(PROVIDER_ERROR,
                             f"{subject} answered with something that is not "
                             "valid JSON: is the base URL an LLM API?")
    status = _status(exc)
    if status in (401, 403):
        return ProviderError(AUTH, f"Authentication failed (HTTP {status}):{where} "
                             "refused the credentials.", upstream_status=status)
    if status == 429:
        return ProviderError(RATE_LIMITED, f"Rate limited (HTTP 429) by{where}: try again "
                             "later or raise the account's limits.", upstream_status=429,
                             retry_after=_retry_after(exc))
    if status == 404:
        if listing:
            return ProviderError(BAD_REQUEST, f"The models endpoint was not found (HTTP 404) "
                                 f"at{where}: check the base URL.", upstream_status=404)
        return ProviderError(MODEL_NOT_FOUND, f"The model or endpoint was not found (HTTP 404) "
                             f"at{where}: check the model name and the base URL.",
                             upstream_status=404)
    if status in (408, 504):
        return ProviderError(TIMEOUT, f"{subject} timed out (HTTP {status}).",
                             upstream_status=status)
    if status is not None and 400 <= status < 500:
        return ProviderError(BAD_REQUEST, f"{subject} rejected the request "
                             f"(HTTP {status}): check the model and settings.",
                             upstream_status=status)
    if status is not None and status >= 500 and "APIConnectionError" in names:
        return ProviderError(UNREACHABLE, f"Could not get an answer from{where}.")
    if status is not None and status >= 500:
        return ProviderError(PROVIDER_ERROR, f"{subject} failed with HTTP "
                             f"{status}: a problem on the provider's side.",
                             upstream_status=status)
    if "APIConnectionError" in names:
        return ProviderError(UNREACHABLE, f"Could not get an answer from{where}.")
    return ProviderError(PROVIDER_ERROR, f"The call to{where} failed "
                         f"({type(exc).__name__}).")



MAX_UPSTREAM_MESSAGE = 2000
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?(?:\w+Exception - )?")


def _scrub(value, limit: int = MAX_UPSTREAM_MESSAGE) -> str | None:
    """A provider-written string fit to show: secrets redacted, bounded."""
    from llmconn.redaction import redact

    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    text = redact(text[: limit * 4])  # bound the work before redacting, then the result
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _from_json(data) -> dict | None:
    """{"message", "type", "param", "code"} from the error body shapes providers use: OpenAI's
    `{"error": {...}}` (Gemini's too, with `status`), Anthropic's `{"type": "error", "error":
    {...}}`, `{"error": "text"}`, `{"message": ...}`, FastAPI's `{"detail": ...}`."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini answers some errors as a one-element list
    if not isinstance(data, dict):
        return None
    error = data.get("error", data)
    if isinstance(error, str):
        return {"message": error}
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    if message is None and "detail" in error:
        message = error["detail"]
    if message is None:
        return None
    code = error.get("code")
    return {"message": message if isinstance(message, str) else json.dumps(message),
            "type": error.get("type") or error.get("status"),
            "param": error.get("param"),
            "code": code if isinstance(code, str) else None}


def _parse(text) -> dict | None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        found = _from_json(json.loads(text))
    except ValueError:
        found = None
    return found


def upstream_detail(exc: BaseException) -> dict | None:
    """The provider's own error: {"message", "type", "param", "code"} (strings or None), with
    secrets scrubbed; None when the failure carries no answer from the provider.

    Looks along the exception chain for the raw response body (httpx's HTTPStatusError, which
    litellm and the openai SDK wrap), then the parsed `body` the openai SDK keeps, then the
    text litellm put in its message."""
    chain = _chain(exc)
    found = None
    for item in reversed(chain):  # the innermost holds the raw answer
        response = getattr(item, "response", None)
        content = getattr(response, "content", None)
        if isinstance(content, (bytes, str)):
            found = _parse(content)
            if found is None and content.strip() and getattr(response, "status_code", 0) >= 400:
                text = content.decode("utf-8", "replace") if isinstance(content, bytes) \
                    else content
                found = {"message": text.strip()}
            if found:
                break
    if found is None:
        for item in chain:
            body = getattr(item, "body", None)
            if isinstance(body, (dict, list)):
                found = _from_json(body) or _from_json({"error": body})
                if found:
                    break
    if found is None:
        for item in chain:
            message = getattr(item, "message", None)
            if isinstance(message, str) and message.strip() and _status(item):
                text = _LITELLM_PREFIX.sub("", message.strip(), count=1)
                found = _parse(text) or {"message": text}
                break
    if not found or not found.get("message"):
        return None
    return {"message": _scrub(found["message"]), "type": _scrub(found.get("type"), 100),
            "param": _scrub(found.get("param"), 200), "code": _scrub(found.get("code"), 200)}
