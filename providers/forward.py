"""The calls workspaces make to providers (the /v1 gateway and the Python client), via litellm.

`chat`, `chat_stream` and `embed` take the litellm keyword arguments a resolution produced
(`providers.params.litellm_kwargs`: model string, api_base, key or headers) and the caller's
OpenAI-style parameters, check the endpoint against the egress policy, call litellm with no
retries and a timeout, and return OpenAI-shaped dicts. Every failure becomes a
`providers.errors.ProviderError` whose status, code and message are ours (what a gateway client
should see: a provider's 401 is a 502 "provider_auth_failed", never our 401); upstream text
never reaches the caller (providers.errors writes every sentence).

Providers that speak OpenAI's wire format (`OpenAIWireProvider` subclasses in the catalog:
OpenAI, OpenAI-compatible servers, Ollama, vLLM, LM Studio, OpenRouter, Groq, ...) are called
directly (the class's `direct_target`):
the caller's body is forwarded with the model name and the connection's credentials over
providers.transport (aiohttp behind the egress guard: the address checked is the address
connected to, no redirects, verified TLS with the connection's CA, size bounds, backpressure).
litellm is used only to translate to other formats (Anthropic, Azure, Bedrock, Vertex,
Gemini...), and its requests go out through the same transport (`_litellm_call`); it adds
~2.6 ms per call and ~150 MB to a process, so a web process that only serves OpenAI-wire
connections never imports it. Prices come from litellm's price table file, read without
importing litellm (`cost`).

Time: `timeout` (the connection's timeout_seconds, else LLMCONN_PROVIDER_TIMEOUT) bounds the
connect, the first byte and every silence; a non-streamed answer must also arrive whole within
it; a stream that keeps producing runs up to LLMCONN_STREAM_MAX_SECONDS.

litellm is imported lazily: importing it takes seconds (STACK-NOTES.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import urlsplit

from . import errors
from .errors import ProviderError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 120
_litellm_module = None


def _litellm():
    """The litellm module, imported on first use (the one helper that does: every caller in
    providers/ uses it): quiet, its HTTP clients are providers.transport's, and it never logs
    messages (callbacks and its own logging get no prompt or answer text)."""
    global _litellm_module
    if _litellm_module is None:
        import litellm

        from .transport import install_litellm

        litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout
        litellm.telemetry = False
        litellm.turn_off_message_logging = True
        install_litellm(litellm)
        _litellm_module = litellm
    return _litellm_module


def stream_max_seconds() -> float:
    from django.conf import settings

    return float(getattr(settings, "LLMCONN_STREAM_MAX_SECONDS", 3600))


def _litellm_call(kwargs: dict) -> tuple[dict, str]:
    """(kwargs for litellm with the transport's client where litellm takes one, the CA PEM to
    set in transport.CA_CERT around the call)."""
    from .params import pop_ca_cert
    from .transport import litellm_clients

    kwargs, ca_cert = pop_ca_cert(kwargs)
    if _prefix_traits(_prefix(kwargs.get("model")))[0]:
        kwargs["client"] = litellm_clients()[0]
    return kwargs, ca_cert


def _prefix(model: str | None) -> str:
    return (model or "").partition("/")[0]


def _prefix_traits(prefix: str) -> tuple[bool, tuple[str, ...]]:
    """What the catalog's providers of a litellm prefix declare: (litellm calls them through
    its own httpx handler, the credential URLs their client library fetches from:
    Provider.token_urls)."""
    matching = _specs_by_prefix().get(prefix, ())
    return (any(p.litellm_http_handler for p in matching),
            tuple(u for p in matching for u in p.token_urls))


def token_urls(model: str) -> tuple[str, ...]:
    """The credential URLs a litellm call for `model` (a litellm model string) reaches through
    the provider's own client library (Provider.token_urls)."""
    return _prefix_traits(_prefix(model))[1]


async def check_litellm_egress(endpoint: str | None, model: str) -> None:
    """The egress check of a litellm call: its endpoint and its provider's token URLs."""
    await check_egress(endpoint)
    for url in token_urls(model):
        await check_egress(url)


# Provider statuses the gateway answers as they are (CONTRACT.md, "Provider errors"); other
# 4xx are 400, a failure of the stored credentials 502, timeouts 504 (errors.GATEWAY_STATUS).
PASSED_STATUSES = frozenset({400, 404, 413, 422, 429})


def classify(exc: BaseException, *, label: str, host: str = "") -> ProviderError:
    """Turn what a provider call raised into a ProviderError for a gateway client (our
    status, code, message naming the connection's `label`).

    The error class and sentence come from providers.errors.classify (never upstream text);
    the status is what a gateway client should see: a provider's 401 is a 502, because 401
    from us means "your llmconn API key is not valid".
    """
    if isinstance(exc, ProviderError) and exc.label is not None:
        return exc
    if isinstance(exc, ResponseTooLarge):
        return ProviderError(
            errors.PROVIDER_ERROR, f"Error from the provider ({label}): the answer was larger "
            f"than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; stopped reading.",
            status=502, code="provider_response_too_large", label=label)
    err = errors.classify(exc, host=host)
    status, code = err.status, err.code
    if err.error_class == errors.PROVIDER_ERROR and err.upstream_status == 503:
        status, code = 503, "provider_unavailable"
    if err.upstream_status in PASSED_STATUSES and err.error_class in (
            errors.BAD_REQUEST, errors.MODEL_NOT_FOUND, errors.RATE_LIMITED):
        status = err.upstream_status
    # The provider's own explanation (scrubbed, bounded): which parameter was wrong, etc.
    detail = None if err.error_class in (errors.TIMEOUT, errors.UNREACHABLE, errors.BLOCKED) \
        else errors.upstream_detail(exc)
    type_ = param = None
    if detail is not None:
        message = f"Error from the provider ({label}): {detail['message']}"
        type_, param = detail["type"], detail["param"]
        if detail["code"] and err.error_class not in (errors.AUTH, errors.BLOCKED):
            code = detail["code"]
    else:
        message = f"Error from the provider ({label}): {err.message}"
    if err.error_class == errors.AUTH:
        message += (" Your llmconn API key was accepted; an admin must fix the credentials of "
                    "the workspace's connection.")
    if err.error_class == errors.PROVIDER_ERROR and err.upstream_status is None:
        logger.warning("Provider call failed (%s): %s", label, type(exc).__name__)
    return ProviderError(err.error_class, message, status=status, code=code,
                         upstream_status=err.upstream_status, retry_after=err.retry_after,
                         type=type_, param=param, label=label)


# (scheme://host:port, policy) -> monotonic time until which the URL is known to be allowed
_EGRESS_OK: dict[tuple, float] = {}
EGRESS_CHECK_TTL_SECONDS = 10.0


async def check_egress(url: str | None) -> None:
    """Raise EgressBlocked (or LookupError) unless the egress policy lets us call `url`.

    A positive answer is remembered for EGRESS_CHECK_TTL_SECONDS per host and policy (a policy
    change is a new key): the DNS lookup in a thread costs more than a local call. Every new
    connection is checked again by the guarded transport, at the address it connects to.
    """
    if not url:
        return
    from providers.egress import check_url, policy

    try:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port, policy())
    except ValueError:
        key = None
    now = time.monotonic()
    if key is not None and _EGRESS_OK.get(key, 0.0) > now:
        return
    await asyncio.to_thread(check_url, url)
    if key is not None:
        if len(_EGRESS_OK) > 1000:
            _EGRESS_OK.clear()
        _EGRESS_OK[key] = now + EGRESS_CHECK_TTL_SECONDS


# --- direct calls for OpenAI-wire providers ------------------------------------------------

class UpstreamStreamError(Exception):
    """An error event inside an upstream SSE stream (classified as a provider error)."""


@functools.cache
def _specs_by_prefix() -> dict[str, tuple[type, ...]]:
    """The catalog's provider classes by litellm model prefix (built once: the catalog is
    registered at import). Their attributes are read at call time."""
    from .base import all_providers

    found: dict[str, list] = {}
    for spec in all_providers():
        found.setdefault(spec.litellm_prefix, []).append(spec)
    return {prefix: tuple(specs) for prefix, specs in found.items()}


@functools.cache
def _direct_by_prefix() -> dict[str, type | None]:
    return {prefix: specs[0] if len({s.direct_target.__func__ for s in specs}) == 1 else None
            for prefix, specs in _specs_by_prefix().items()}


def _provider_of(prefix: str):
    """The provider class whose `direct_target` answers for a litellm model prefix: the one
    every provider with that prefix shares (`openai/` is OpenAI's, Ollama's and any
    OpenAI-compatible server's); None when they differ or there is none."""
    return _direct_by_prefix().get(prefix)


def direct_target(call: dict) -> tuple[str, str, dict] | None:
    """(base URL, model name, headers) when `call` (litellm kwargs) can be forwarded without
    litellm (the provider class's `direct_target`: OpenAI-wire providers); None otherwise."""
    spec = _provider_of((call.get("model") or "").partition("/")[0])
    return spec.direct_target(call) if spec is not None else None


def _answer(raw: bytes) -> dict:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise json.JSONDecodeError("not an object", "", 0)
    return data


MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # one non-streamed answer; more is refused


# An upstream answer (or one streamed event) past MAX_RESPONSE_BYTES: an endless or absurd body.
from .transport import ResponseTooLarge  # noqa: E402


async def _post_json(url: str, headers: dict, body: dict, timeout: float,
                     ca_cert: str = "") -> dict:
    """POST a JSON body and read the JSON answer, within `timeout` for the whole exchange (a
    trickling answer cannot reset it read by read: aiohttp's total deadline) and
    MAX_RESPONSE_BYTES."""
    from . import transport

    response = await transport.send(
        "POST", url, headers={**headers, "content-type": "application/json"},
        data=json.dumps(body).encode(), timeout=timeout, total=timeout, ca_cert=ca_cert,
        buffer=transport.WHOLE_BUFFER_BYTES)
    try:
        if response.status >= 300:
            raise transport.status_error(response, await _bounded_error_body(response))
        raw = await transport.read_body(response, MAX_RESPONSE_BYTES)
    finally:
        response.release()
    return _answer(raw)


async def _bounded_error_body(response) -> bytes:
    from . import transport

    try:
        return await transport.read_body(response, transport.MAX_ERROR_BODY)
    except ResponseTooLarge:
        return b""


def check_fields(call: dict, params: dict, *, label: str, endpoint: str = "chat") -> None:
    """Refuse (400 `unsupported_parameter`, naming field and provider) what litellm would not
    send to the provider of `call` (providers.fields): never dropped silently."""
    from .fields import unsupported

    refused = unsupported(model=call.get("model") or "", params=params, endpoint=endpoint)
    if refused:
        raise ProviderError(
            errors.BAD_REQUEST,
            f"{label} cannot take {', '.join(f'`{n}`' for n in refused)}: litellm, which "
            "translates the request for this provider, does not map "
            f"{'it' if len(refused) == 1 else 'them'}. Remove "
            f"{'it' if len(refused) == 1 else 'them'} or use an OpenAI-compatible connection.",
            status=400, code="unsupported_parameter", type="invalid_request_error",
            param=refused[0], label=label)


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
    endpoint = endpoint or call.get("api_base")
    direct = direct_target(call)
    if direct is not None:
        base, model, headers = direct
        body = {**params, "model": model}  # the client's fields as sent (CONTRACT.md)
        try:
            await check_egress(endpoint)
            return await _post_json(f"{base}/chat/completions", headers, body,
                                    timeout or call.get("timeout") or DEFAULT_TIMEOUT_SECONDS,
                                    call.get("llmconn_ca_cert") or "")
        except Exception as exc:  # noqa: BLE001 - every failure becomes our error
            raise classify(exc, label=label, host=_host(endpoint)) from None
    check_fields(call, params, label=label)
    from .transport import CA_CERT

    litellm = _litellm()
    kwargs, ca_cert = _litellm_call(_kwargs(call, params, timeout))
    kwargs.pop("stream", None)
    kwargs.pop("stream_options", None)
    token = CA_CERT.set(ca_cert)
    try:
        await check_litellm_egress(endpoint, kwargs.get("model") or "")
        # litellm 1.106 routes any request with `tools` through its MCP gateway handler, which
        # imports the optional `mcp` package; this private flag skips it (we never use MCP).
        async with asyncio.timeout(kwargs["timeout"]):
            response = await litellm.acompletion(**kwargs, _skip_mcp_handler=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes our error
        raise classify(exc, label=label, host=_host(endpoint)) from None
    finally:
        CA_CERT.reset(token)
    return _dump(response)


async def chat_stream(*, call: dict, params: dict, label: str, endpoint: str | None = None,
                      timeout: float | None = None) -> AsyncIterator[dict]:
    """A streamed chat completion: starts the call (errors raise here, before any chunk), then
    returns an iterator of OpenAI chunk dicts; errors during the stream raise from it. The last
    chunk carries `usage`."""
    endpoint = endpoint or call.get("api_base")
    direct = direct_target(call)
    if direct is not None:
        return await _direct_stream(direct, params, label=label, endpoint=endpoint,
                                    timeout=timeout or call.get("timeout")
                                    or DEFAULT_TIMEOUT_SECONDS,
                                    ca_cert=call.get("llmconn_ca_cert") or "")
    from .transport import CA_CERT

    check_fields(call, params, label=label)
    litellm = _litellm()
    kwargs, ca_cert = _litellm_call(_kwargs(call, params, timeout))
    kwargs["stream"] = True
    kwargs["stream_options"] = {"include_usage": True}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_max_seconds()
    token = CA_CERT.set(ca_cert)
    stream = None
    try:
        await check_litellm_egress(endpoint, kwargs.get("model") or "")
        # litellm's timeout bounds the connect and every read (the transport's sock_read);
        # the first chunk must come within it too.
        async with asyncio.timeout(kwargs["timeout"]):
            stream = await litellm.acompletion(**kwargs, _skip_mcp_handler=True)
            iterator = stream.__aiter__()
            first = await iterator.__anext__()
    except StopAsyncIteration:
        first, iterator = None, None
    except Exception as exc:  # noqa: BLE001
        await _aclose(stream)
        raise classify(exc, label=label, host=_host(endpoint)) from None
    finally:
        CA_CERT.reset(token)

    async def chunks() -> AsyncIterator[dict]:
        if first is None:
            return
        try:
            yield _dump(first)
            while True:
                async with asyncio.timeout_at(deadline):
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        return
                yield _dump(chunk)
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, label=label, host=_host(endpoint)) from None
        finally:
            # Closed early (the client went away): release the upstream connection now.
            await _aclose(stream)

    return chunks()


async def embed(*, call: dict, params: dict, label: str, endpoint: str | None = None,
                timeout: float | None = None) -> dict:
    """Embeddings (OpenAI response dict). OpenAI-wire providers get the client's fields as sent
    (`encoding_format` included: they encode); through litellm, float vectors are asked for and
    the caller encodes them when the client asked for base64 (`encode_embeddings`)."""
    endpoint = endpoint or call.get("api_base")
    direct = direct_target(call)
    if direct is not None:
        base, model, headers = direct
        body = {**params, "model": model}
        try:
            await check_egress(endpoint)
            return await _post_json(f"{base}/embeddings", headers, body,
                                    timeout or call.get("timeout") or DEFAULT_TIMEOUT_SECONDS,
                                    call.get("llmconn_ca_cert") or "")
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, label=label, host=_host(endpoint)) from None
    check_fields(call, params, label=label, endpoint="embeddings")
    from .transport import CA_CERT

    litellm = _litellm()
    kwargs, ca_cert = _litellm_call(_kwargs(call, params, timeout))
    kwargs["encoding_format"] = "float"
    token = CA_CERT.set(ca_cert)
    try:
        await check_litellm_egress(endpoint, kwargs.get("model") or "")
        async with asyncio.timeout(kwargs["timeout"]):
            response = await litellm.aembedding(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, label=label, host=_host(endpoint)) from None
    finally:
        CA_CERT.reset(token)
    return _dump(response)  # floats: the caller encodes them if base64 was asked for


def _to_base64(vector: list) -> str:
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _shape(value, depth: int = 0) -> str:
    """A short description of an embedding's shape for error messages."""
    if isinstance(value, list):
        inner = _shape(value[0], depth + 1) if value and depth < 4 else "nothing"
        return f"a list of {len(value)} × {inner}"
    return type(value).__name__


def encode_embeddings(response: dict, *, label: str) -> None:
    """Encode the float vectors of an embeddings answer as base64 float32 (in place), as
    OpenAI does for `encoding_format: "base64"`. A flat vector becomes one string; a model that
    answers one vector per token (a list of lists, e.g. a model without pooling) keeps its
    nested floats (OpenAI's SDKs decode only strings, so clients still read them); any other
    shape is a 502 naming it (the usage row is written all the same)."""
    for item in response.get("data") or []:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, str):
            continue
        if isinstance(vector, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector):
            item["embedding"] = _to_base64(vector)
            continue
        if isinstance(vector, list) and vector and all(
                isinstance(row, list) and all(isinstance(x, (int, float))
                                              and not isinstance(x, bool) for x in row)
                for row in vector):
            continue  # one vector per token: left as floats
        raise ProviderError(
            errors.PROVIDER_ERROR,
            f"Error from the provider ({label}): an embedding came back as {_shape(vector)}, "
            "not a list of numbers (or one per token); it cannot be encoded as base64.",
            status=502, code="provider_bad_embedding", type="provider_error", label=label)


async def _aclose(stream) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        try:
            await closer()
        except Exception:  # noqa: BLE001
            pass


def _event(line: bytes):
    """The JSON event of one SSE line of an OpenAI stream: a dict, None (not a data line),
    or _DONE (`data: [DONE]`)."""
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return _DONE
    event = json.loads(data)
    if not isinstance(event, dict):
        raise json.JSONDecodeError("not an object", data.decode("utf-8", "replace"), 0)
    if event.get("error"):
        error = UpstreamStreamError("the provider reported an error in the stream")
        error.body = event  # the provider's message (providers.errors.upstream_detail)
        raise error
    return event


_DONE = object()


async def _direct_stream(direct: tuple[str, str, dict], params: dict, *, label: str,
                         endpoint: str | None, timeout: float,
                         ca_cert: str = "") -> AsyncIterator[dict]:
    """A direct OpenAI-wire stream over providers.transport: `timeout` bounds the connect, the
    first event and every silence; the whole stream runs up to stream_max_seconds(). Lines are
    read only as the caller asks for events, so a slow client pauses the provider."""
    from . import transport

    base, model, headers = direct
    # The client's fields as sent; usage asked for in any case (counted, then dropped from the
    # answer unless the client asked for it too).
    body = {**params, "model": model, "stream": True,
            "stream_options": {**(params.get("stream_options") or {}), "include_usage": True}}
    host = _host(endpoint)
    response = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_max_seconds()
    try:
        async with asyncio.timeout(timeout):
            await check_egress(endpoint)
            response = await transport.send(
                "POST", f"{base}/chat/completions",
                headers={**headers, "content-type": "application/json",
                         "accept": "text/event-stream"},
                data=json.dumps(body).encode(), timeout=timeout, ca_cert=ca_cert)
            if response.status >= 300:
                raise transport.status_error(response, await _bounded_error_body(response))
            lines = transport.lines(response)
            first = None
            async for line in lines:
                event = _event(line)
                if event is None:
                    continue
                if event is not _DONE:
                    first = event
                break
    except Exception as exc:  # noqa: BLE001
        if response is not None:
            response.release()
        raise classify(exc, label=label, host=host) from None

    async def chunks() -> AsyncIterator[dict]:
        done = first is None
        try:
            if first is None:
                return
            yield first
            while True:  # each silence within `timeout` (sock_read), the whole up to the cap
                async with asyncio.timeout_at(deadline):
                    try:
                        event = _event(await lines.__anext__())
                    except StopAsyncIteration:
                        return
                if event is _DONE:
                    done = True
                    return
                if event is not None:
                    yield event
        except Exception as exc:  # noqa: BLE001
            raise classify(exc, label=label, host=host) from None
        finally:
            # Closed early (the client went away): drop the upstream connection now; read to
            # `[DONE]`: wait briefly for the message's end, to keep the connection.
            await lines.aclose()
            if done:
                transport.release_after_drain(response)
            else:
                response.release()

    return chunks()


# --- prices ---------------------------------------------------------------------------------

_PRICES: dict[str, tuple[float, float]] | None = None


def _load_prices() -> dict[str, tuple[float, float]]:
    """{model: (input cost per token, output cost per token)} from litellm's price table file
    (the one litellm itself reads with LITELLM_LOCAL_MODEL_COST_MAP), without importing it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("litellm")
    prices: dict[str, tuple[float, float]] = {}
    if spec is None or not spec.submodule_search_locations:
        return prices
    path = Path(list(spec.submodule_search_locations)[0]) / \
        "model_prices_and_context_window_backup.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("litellm's price table is unreadable: costs are not recorded.")
        return prices
    for name, entry in table.items():
        if not isinstance(entry, dict):
            continue
        inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(inp, (int, float)) or isinstance(out, (int, float)):
            prices[name] = (float(inp or 0), float(out or 0))
    return prices


_MODES: dict[str, str] | None = None


def model_mode(model: str) -> str:
    """litellm's price table's `mode` for a model ("chat", "embedding", ...; "" if unknown),
    read without importing litellm, by the full name then without its provider prefix."""
    global _MODES
    if _MODES is None:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("litellm")
        _MODES = {}
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / \
                "model_prices_and_context_window_backup.json"
            try:
                table = json.loads(path.read_text())
            except (OSError, ValueError):
                table = {}
            _MODES = {name: entry.get("mode") or "" for name, entry in table.items()
                      if isinstance(entry, dict)}
    found = _MODES.get(model)
    if found is None and "/" in model:
        found = _MODES.get(model.split("/", 1)[1])
    return found or ""


def price_of(model: str) -> tuple[float, float] | None:
    """(input, output) cost per token of a litellm model string, or None when unknown: the
    full string (`openrouter/openai/gpt-4o-mini`), then the name without its provider prefix
    (`openai/gpt-4o-mini` → `gpt-4o-mini`), as litellm's cost_per_token looks them up."""
    global _PRICES
    if _PRICES is None:
        _PRICES = _load_prices()
    found = _PRICES.get(model)
    if found is None and "/" in model:
        found = _PRICES.get(model.split("/", 1)[1])
    return found


def cost(*, model: str, input_tokens: int, output_tokens: int = 0) -> Decimal | None:
    """Cost of a call from litellm's price table; None when the model's price is unknown."""
    if not model or (not input_tokens and not output_tokens):
        return None
    price = price_of(model)
    if price is None:
        return None
    total = input_tokens * price[0] + output_tokens * price[1]
    return Decimal(str(total)) if total else None


def usage_of(response: dict) -> tuple[int, int]:
    """(input tokens, output tokens) of an OpenAI response or chunk dict."""
    usage = response.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
