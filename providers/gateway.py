"""The calls workspaces make to providers (the /v1 gateway and the Python client), via litellm.

`chat`, `chat_stream` and `embed` take the litellm keyword arguments a resolution produced
(`providers.params.litellm_kwargs`: model string, api_base, key or headers) and the caller's
OpenAI-style parameters, check the endpoint against the egress policy, call litellm with no
retries and a timeout, and return OpenAI-shaped dicts. Every failure becomes a
`ProviderCallError` whose status, code and message are ours (what a gateway client should see:
a provider's 401 is a 502 "provider_auth_failed", never our 401); upstream text never reaches
the caller (providers.errors writes every sentence).

litellm is imported lazily: importing it takes seconds (STACK-NOTES.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

from . import errors

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 120
_litellm_module = None


def _litellm():
    global _litellm_module
    if _litellm_module is None:
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout
        litellm.telemetry = False
        _litellm_module = litellm
    return _litellm_module


@dataclass(eq=False)
class ProviderCallError(Exception):
    """A failed provider call, described for the caller in OpenAI's error format."""

    status: int
    code: str
    message: str
    error_class: str
    retry_after: str | None = None
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def as_openai(self) -> dict:
        """`{"error": {"message", "type", "code", "param"}}` as OpenAI's API answers errors."""
        return {"error": {"message": self.message, "type": "provider_error", "code": self.code,
                          "param": None, "error_class": self.error_class}}


# error class (providers.errors) -> (HTTP status, code) the gateway answers with
_STATUS = {
    errors.AUTH: (502, "provider_auth_failed"),
    errors.RATE_LIMITED: (429, "provider_rate_limited"),
    errors.UNREACHABLE: (502, "provider_unreachable"),
    errors.TIMEOUT: (504, "provider_timeout"),
    errors.MODEL_NOT_FOUND: (404, "provider_model_not_found"),
    errors.BAD_REQUEST: (400, "provider_bad_request"),
    errors.BLOCKED: (502, "provider_blocked"),
    errors.PROVIDER_ERROR: (502, "provider_error"),
}


def classify(exc: BaseException, *, label: str, host: str = "") -> ProviderCallError:
    """Turn what a provider call raised into a ProviderCallError (our status, code, message).

    The error class and sentence come from providers.errors.classify (never upstream text);
    the status is what a gateway client should see: a provider's 401 is a 502, because 401
    from us means "your llmconn API key is not valid".
    """
    if isinstance(exc, ProviderCallError):
        return exc
    err = errors.classify(exc, host=host)
    status, code = _STATUS.get(err.error_class, (502, "provider_error"))
    if err.error_class == errors.PROVIDER_ERROR and err.status == 503:
        status, code = 503, "provider_unavailable"
    message = f"Error from the provider ({label}): {err.message}"
    if err.error_class == errors.AUTH:
        message += (" Your llmconn API key was accepted; an admin must fix the credentials of "
                    "the workspace's connection.")
    if err.error_class == errors.PROVIDER_ERROR and err.status is None:
        logger.warning("Provider call failed (%s): %s", label, type(exc).__name__)
    retry_after = None
    if err.retry_after is not None:
        retry_after = str(max(0, int(err.retry_after)))
    elif err.error_class == errors.RATE_LIMITED:
        retry_after = _retry_after_header(exc)
    return ProviderCallError(status, code, message, err.error_class, retry_after=retry_after)


def _retry_after_header(exc: BaseException) -> str | None:
    """The provider's Retry-After, wherever litellm kept it (its own `response` has no
    headers; `litellm_response_headers` and the wrapped openai/httpx errors do)."""
    seen = 0
    while exc is not None and seen < 20:
        for headers in (getattr(exc, "litellm_response_headers", None),
                        getattr(getattr(exc, "response", None), "headers", None)):
            value = headers.get("retry-after") if headers is not None else None
            if value and str(value).strip().isdigit():
                return str(value).strip()
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


async def check_egress(url: str | None) -> None:
    """Raise EgressBlocked (or LookupError) unless the egress policy lets us call `url`."""
    if not url:
        return
    from providers.egress import check_url

    await asyncio.to_thread(check_url, url)


def _kwargs(call: dict, params: dict, timeout: float | None) -> dict:
    # The resolution's arguments come last: nothing the caller sent can redirect the call.
    return {**params, **call, "num_retries": 0,
            "timeout": timeout or call.get("timeout") or DEFAULT_TIMEOUT_SECONDS}


def _dump(obj) -> dict:
    data = obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)
    return _clean(data)


def _clean(value):
    """Drop litellm-only keys and Nones that OpenAI's responses do not carry."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if k not in ("provider_specific_fields", "_hidden_params", "_response_ms")
                and v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _host(endpoint: str | None) -> str:
    try:
        return (urlsplit(endpoint).hostname or "") if endpoint else ""
    except ValueError:
        return ""


async def chat(*, call: dict, params: dict, label: str, endpoint: str | None = None,
               timeout: float | None = None) -> dict:
    """One chat completion (OpenAI response dict). `endpoint`: the URL the egress policy checks
    (defaults to the call's api_base)."""
    litellm = _litellm()
    kwargs = _kwargs(call, params, timeout)
    kwargs.pop("stream", None)
    kwargs.pop("stream_options", None)
    endpoint = endpoint or call.get("api_base")
    try:
        await check_egress(endpoint)
        # litellm 1.106 routes any request with `tools` through its MCP gateway handler, which
        # imports the optional `mcp` package; this private flag skips it (we never use MCP).
        response = await litellm.acompletion(**kwargs, _skip_mcp_handler=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes our error
        raise classify(exc, label=label, host=_host(endpoint)) from None
    return _dump(response)


async def chat_stream(*, call: dict, params: dict, label: str, endpoint: str | None = None,
                      timeout: float | None = None) -> AsyncIterator[dict]:
    """A streamed chat completion: starts the call (errors raise here, before any chunk), then
    returns an iterator of OpenAI chunk dicts; errors during the stream raise from it. The last
    chunk carries `usage`."""
    litellm = _litellm()
    kwargs = _kwargs(call, params, timeout)
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    endpoint = endpoint or call.get("api_base")
    try:
        await check_egress(endpoint)
        stream = await litellm.acompletion(**kwargs, _skip_mcp_handler=True)
        iterator = stream.__aiter__()
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first, iterator = None, None
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, label=label, host=_host(endpoint)) from None

    async def chunks() -> AsyncIterator[dict]:
        if first is None:
            return
        try:
            yield _dump(first)
            async for chunk in iterator:
                yield _dump(chunk)
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, label=label, host=_host(endpoint)) from None
        finally:
            # Closed early (the client went away): release the upstream connection now.
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:  # noqa: BLE001
                    pass

    return chunks()


async def embed(*, call: dict, params: dict, label: str, endpoint: str | None = None,
                timeout: float | None = None) -> dict:
    """Embeddings (OpenAI response dict, float vectors)."""
    litellm = _litellm()
    kwargs = _kwargs(call, params, timeout)
    kwargs["encoding_format"] = "float"
    endpoint = endpoint or call.get("api_base")
    try:
        await check_egress(endpoint)
        response = await litellm.aembedding(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, label=label, host=_host(endpoint)) from None
    return _dump(response)


def cost(*, model: str, input_tokens: int, output_tokens: int = 0) -> Decimal | None:
    """Cost of a call from litellm's price table; None when the model's price is unknown."""
    if not model or (not input_tokens and not output_tokens):
        return None
    litellm = _litellm()
    try:
        prompt, completion = litellm.cost_per_token(
            model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens)
    except Exception:  # noqa: BLE001 - ModelNotMappedError and friends: price unknown
        return None
    total = (prompt or 0) + (completion or 0)
    return Decimal(str(total)) if total else None


def usage_of(response: dict) -> tuple[int, int]:
    """(input tokens, output tokens) of an OpenAI response or chunk dict."""
    usage = response.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
