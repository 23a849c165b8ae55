"""Provider failures as the contract's error classes, with messages written by us.

Upstream error text can echo what was sent (OpenAI's "Incorrect API key provided: sk-..."), so
it never reaches a message, a log line or a stored row: `classify()` looks only at exception
types and HTTP status codes, and writes its own sentence. It does not import litellm: it
recognises litellm's, openai's, httpx's and aiohttp's exceptions by class name along the
exception chain (`__cause__` / `__context__`), which also works for exceptions that litellm
re-wraps (a refused port arrives as `InternalServerError("Connection error.")`, STACK-NOTES.md).
"""

from __future__ import annotations

import asyncio
import json

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


class ProviderError(Exception):
    """A classified provider failure. `message` is ours: safe to show, store and log."""

    def __init__(self, error_class: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.error_class in RETRYABLE

    def __reduce__(self):  # picklable without upstream text (Celery, multiprocessing)
        return (_rebuild, (self.error_class, self.message, self.status, self.retry_after))


def _rebuild(error_class, message, status, retry_after):
    return ProviderError(error_class, message, status=status, retry_after=retry_after)


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


def _retry_after(exc: BaseException) -> float | None:
    for item in _chain(exc):
        headers = getattr(getattr(item, "response", None), "headers", None)
        if headers is not None:
            try:
                value = headers.get("retry-after")
                return float(value) if value else None
            except (TypeError, ValueError, AttributeError):
                return None
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
                             status=408)
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
                             "refused the credentials.", status=status)
    if status == 429:
        return ProviderError(RATE_LIMITED, f"Rate limited (HTTP 429) by{where}: try again "
                             "later or raise the account's limits.", status=429,
                             retry_after=_retry_after(exc))
    if status == 404:
        if listing:
            return ProviderError(BAD_REQUEST, f"The models endpoint was not found (HTTP 404) "
                                 f"at{where}: check the base URL.", status=404)
        return ProviderError(MODEL_NOT_FOUND, f"The model or endpoint was not found (HTTP 404) "
                             f"at{where}: check the model name and the base URL.", status=404)
    if status in (408, 504):
        return ProviderError(TIMEOUT, f"{subject} timed out (HTTP {status}).",
                             status=status)
    if status is not None and 400 <= status < 500:
        return ProviderError(BAD_REQUEST, f"{subject} rejected the request "
                             f"(HTTP {status}): check the model and settings.", status=status)
    if status is not None and status >= 500 and "APIConnectionError" in names:
        return ProviderError(UNREACHABLE, f"Could not get an answer from{where}.")
    if status is not None and status >= 500:
        return ProviderError(PROVIDER_ERROR, f"{subject} failed with HTTP "
                             f"{status}: a problem on the provider's side.", status=status)
    if "APIConnectionError" in names:
        return ProviderError(UNREACHABLE, f"Could not get an answer from{where}.")
    return ProviderError(PROVIDER_ERROR, f"The call to{where} failed "
                         f"({type(exc).__name__}).")

