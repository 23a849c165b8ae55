"""The OpenAI-compatible gateway: /v1/chat/completions, /v1/embeddings, /v1/models.

Async Django views (served by uvicorn). A request is authenticated by a workspace API key,
its `model` (a role name or a model a bound connection offers) is resolved to a connection
(cached per process, see resolution.py), the call goes to the provider through
providers.forward, and a UsageRecord is written. Errors use OpenAI's format
`{"error": {"message", "type", "code", "param"}}`; errors that come from the provider say so
and never use 401 (which here means "your llmconn key is not valid").
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from llmconn import tracing
from llmconn.errors import ApplicationError
from llmconn.throttling import check_gateway_key, gateway_throttled
from providers import forward as provider_forward
from providers.errors import ProviderError
from providers.tokens import Generated, aestimate

from . import calls, services
from .budgets import BudgetExceeded
from .keys import KeyIdentity, authenticate_key, bearer_token
from .resolution import ROLES, Resolved, current_revision, resolve_model, workspace_models

logger = logging.getLogger(__name__)

# Fields that would send the call (and the stored key) somewhere else, or change how we
# authenticate upstream: always refused (CONTRACT.md, "OpenAI-compatible"). Every other field
# is forwarded as the client sent it (providers.forward; litellm paths: providers.fields).
FORBIDDEN_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "organization", "headers",
    "extra_headers", "extra_body", "extra_query", "custom_llm_provider", "mock_response",
    "client", "max_retries", "timeout",
})
FORBIDDEN_PREFIXES = ("litellm_", "azure_", "vertex_", "aws_")
NOT_FORWARDED = frozenset({"model"})
_NUMBER = (int, float)
_TYPES = {
    "temperature": _NUMBER, "top_p": _NUMBER, "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER, "n": int, "max_tokens": int, "max_completion_tokens": int,
    "seed": int, "top_logprobs": int, "top_k": int, "logprobs": bool, "stream": bool,
    "parallel_tool_calls": bool, "stop": (str, list), "tools": list, "functions": list,
    "tool_choice": (str, dict), "function_call": (str, dict), "response_format": dict,
    "logit_bias": dict, "user": str, "stream_options": dict, "reasoning_effort": str,
    "dimensions": int, "encoding_format": str,
}


# Statuses a retry cannot fix: OpenAI's SDKs retry 408, 409, 429 and 5xx unless the answer
# says `x-should-retry: false` (https://github.com/openai/openai-python, _should_retry).
NO_RETRY_CODES = frozenset({
    "forbidden_parameter", "provider_auth_failed", "provider_blocked", "connection_inactive",
    "unsupported_parameter", "unsupported_endpoint", "request_too_large", "role_not_configured",
})


class GatewayError(Exception):
    """An error of ours (not the provider's) in OpenAI's error format."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = (
            status, message, code, type_, param)

    def response(self) -> JsonResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code,
                          "param": self.param}}
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="llmconn"'
        if _no_retry(self.status, self.code):
            headers["x-should-retry"] = "false"
        return JsonResponse(body, status=self.status, headers=headers)


def _no_retry(status: int, code: str | None) -> bool:
    """True for an answer a client must not retry (a 4xx other than 408/409/429, or one of
    NO_RETRY_CODES)."""
    return code in NO_RETRY_CODES or (400 <= status < 500 and status not in (408, 409, 429))


def _provider_error_response(err: ProviderError, attempt: calls.Attempt | None
                             ) -> JsonResponse:
    headers = {}
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    if not err.should_retry:
        headers["x-should-retry"] = "false"
    if attempt is not None:
        headers.update(_answer_headers(attempt))
    return JsonResponse(err.as_openai(), status=err.status, headers=headers)


def _answer_headers(attempt: calls.Attempt) -> dict:
    """Which connection answered (or failed last), and after how many tries."""
    return {"x-llmconn-connection": attempt.resolved.connection_name,
            "x-llmconn-attempt": str(attempt.number)}


def _budget_response(exc: BudgetExceeded) -> JsonResponse:
    """429 in OpenAI's format naming the budget and when it resets; SDKs must not retry."""
    body = {"error": {"message": exc.message, "type": "insufficient_quota", "code": exc.code,
                      "param": None, "budget": exc.budget}}
    return JsonResponse(body, status=429, headers={
        "Retry-After": str(exc.retry_after), "x-should-retry": "false",
        "x-llmconn-budget": str(exc.budget["id"])})


MAX_JSON_DEPTH = 100  # nesting of a request body; OpenAI's own fields need far less


def max_request_bytes() -> int:
    return int(getattr(settings, "LLMCONN_MAX_REQUEST_BYTES", 32 * 1024 * 1024))


def too_large(limit: int) -> GatewayError:
    """413 naming the limit (LLMCONN_MAX_REQUEST_BYTES)."""
    return GatewayError(413, f"The request body is larger than the limit of {limit} bytes "
                        f"({limit / 1048576:g} MiB, LLMCONN_MAX_REQUEST_BYTES).",
                        code="request_too_large")


def _raw_body(request) -> bytes:
    """The request body, refused past LLMCONN_MAX_REQUEST_BYTES. Read from the stream, not
    `request.body` (which applies Django's DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB, meant for
    forms: one image in a chat message is more)."""
    limit = max_request_bytes()
    if hasattr(request, "_body"):
        raw = request._body
    else:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            raise too_large(limit)
        raw = request.read(limit + 1)
        request._body = raw
    if len(raw) > limit:
        raise too_large(limit)
    return raw


def _too_deep(value) -> bool:
    """True when a parsed JSON value nests deeper than MAX_JSON_DEPTH (iterative walk)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


def parse_json_object(raw: bytes) -> dict:
    """A request body as a JSON object; GatewayError (400) when it is not JSON, not an object
    or nested too deeply (json raises RecursionError, not ValueError, on `[` x 5000)."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "The body must be JSON.", code="invalid_json") from None
    except RecursionError:
        body = None
        deep = True
    else:
        deep = isinstance(body, (dict, list)) and _too_deep(body)
    if deep:
        raise GatewayError(400, f"The JSON body is nested more than {MAX_JSON_DEPTH} levels "
                           "deep.", code="invalid_json")
    if not isinstance(body, dict):
        raise GatewayError(400, "The body must be a JSON object.", code="invalid_json")
    return body


def _parse_body(request) -> dict:
    return parse_json_object(_raw_body(request))


def forbidden_fields(body: dict) -> list[str]:
    """The fields of a request body that would redirect the call or change its credentials."""
    return sorted(k for k in body if k in FORBIDDEN_FIELDS or k.startswith(FORBIDDEN_PREFIXES))


def _check_fields(body: dict) -> None:
    forbidden = forbidden_fields(body)
    if forbidden:
        raise GatewayError(
            400, f"Field(s) {', '.join(forbidden)} are not accepted: the workspace's binding "
            "decides where a call goes and with which credentials.",
            code="forbidden_parameter", param=forbidden[0])
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise GatewayError(400, "`model` is required: a role name (chat, agent, embedding) or a "
                           "model listed by GET /v1/models.", code="missing_model", param="model")
    for name, kinds in _TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) and kinds is not bool and bool not in (
                kinds if isinstance(kinds, tuple) else (kinds,)):
            raise GatewayError(400, f"`{name}` has the wrong type.", code="invalid_type",
                               param=name)
        if not isinstance(value, kinds):
            raise GatewayError(400, f"`{name}` has the wrong type.", code="invalid_type",
                               param=name)


def _context(authorization: str | None, model: str, endpoint: str,
             counted: tuple[int, float | None] | None = None
             ) -> tuple[KeyIdentity, calls.Plan]:
    """Authenticate, resolve, check budgets and plan the call (sync: may query the database,
    fetch an OAuth token). `counted`: (key id, wait) when the warm path already counted this
    call in that key's throttle (not counted twice)."""
    raw = bearer_token(authorization)
    revision = current_revision(*_scopes_of(raw))
    if raw is None:
        raise GatewayError(401, "Missing API key: send `Authorization: Bearer lck_...` with a "
                           "workspace API key.", code="missing_api_key")
    identity = authenticate_key(raw, revision=revision)
    if identity is None:
        raise GatewayError(401, "Invalid or revoked API key.", code="invalid_api_key")
    services.api_key_touch_later(api_key_id=identity.key_id)
    services.api_key_touch_flush(if_due=True)
    if counted is not None and counted[0] == identity.key_id:
        if counted[1] is not None:
            raise gateway_throttled(counted[1])
    else:
        check_gateway_key(identity.key_id)  # 429 + Retry-After past LLMCONN_THROTTLE_GATEWAY
    resolved = resolve_model(workspace_id=identity.scope_id, model=model,
                             endpoint=endpoint, revision=revision)
    plan = calls.plan_call(resolved=resolved, api_key_id=identity.key_id, endpoint=endpoint,
                           revision=revision, user_id=identity.user_id)
    return identity, plan


def _scopes_of(raw_key: str | None) -> list[str]:
    """The cache scopes a call with this key will check (read in the call's first round trip):
    the key's, and those of its workspace's cached resolutions when the key is known."""
    from llmconn import versions

    from .keys import cached_identity
    from .resolution import cached_scopes
    from .services import hash_api_key

    if not raw_key or len(raw_key) > 200:
        return []
    hit = cached_identity(raw_key)
    if hit is None:
        return [versions.key(hash_api_key(raw_key))]
    return [*(s for s, _ in hit[0]), *cached_scopes(hit[1].scope_id)]


_context_sync = sync_to_async(_context)


async def _context_async(authorization: str | None, model: str, endpoint: str,
                         check: WarmCheck | None = None) -> tuple[KeyIdentity, calls.Plan]:
    """`_context`, on the event loop when everything it needs is in this process's memory
    (`_context_warm`, with the round trip `check` already sent if given), else on the sync
    thread."""
    if check is not None:
        await check.areplies()
    warm = _context_warm(authorization, model, endpoint, check)
    if isinstance(warm, tuple) and len(warm) == 2 and isinstance(warm[1], calls.Plan):
        plan = warm[1]
        services.api_key_touch_later(api_key_id=warm[0].key_id)
        if services.api_key_touch_pending():
            _schedule_touch_flush()
        # As plan_call(with_call=True), without blocking (an OAuth token is fetched async).
        try:
            plan.first_call = await calls._acall_kwargs(plan.candidates[0])
        except ProviderError as err:
            plan.first_call = err
        return warm
    try:
        return await _context_sync(authorization, model, endpoint, warm)
    finally:
        if services.api_key_touch_pending():
            _schedule_touch_flush()


_TOUCH_FLUSHES: set = set()  # (references to the running flush tasks)


def _schedule_touch_flush() -> None:
    """Write the last-used times queued by calls in a second, in one UPDATE on the sync thread,
    without holding any call up (one pending flush at a time)."""
    if _TOUCH_FLUSHES:
        return

    async def flush():
        await asyncio.sleep(1.0)
        try:
            await sync_to_async(services.api_key_touch_flush)()
        except Exception:  # noqa: BLE001 - a last-used time is not worth an error
            logger.warning("Could not write API keys' last-used times.", exc_info=True)

    task = asyncio.get_running_loop().create_task(flush())
    _TOUCH_FLUSHES.add(task)
    task.add_done_callback(_TOUCH_FLUSHES.discard)


class WarmCheck:
    """The warm path's one Redis round trip, started before the request body is parsed.

    When this process already knows a request's API key, the versions of the cache scopes its
    cached key and resolutions depend on (one MGET, llmconn.versions) and the key's throttle
    count are asked for as soon as the view starts (`start` schedules the round trip on the
    event loop with redis.asyncio), and the replies are awaited once the body is checked
    (`areplies`): the round trip overlaps that work instead of adding to it, and a slow Redis
    never blocks the event loop (other streams keep flowing). Nothing goes to a provider
    before the replies are read, so an edit, a revoked key or a throttled key still takes
    effect on the very next call. A request refused for its body is not counted (`discard`
    takes its throttle count back), as on the cold path, where the throttle is counted only
    for a call that is going to be made. The throttle's commands are llmconn.throttling's
    (`window_commands`); any Redis trouble makes the replies None and the call takes the sync
    path, which knows what to do.
    """

    __slots__ = ("hit", "window", "scopes", "_client", "_throttle_key", "_task", "_replies")

    def __init__(self, hit, window, client, throttle_key, task, scopes=()):
        self.hit, self.window, self._client = hit, window, client
        self._throttle_key, self._task = throttle_key, task
        self.scopes = scopes
        self._replies: list | None = None

    @classmethod
    def start(cls, authorization: str | None) -> WarmCheck | None:
        """Start the round trip for a key this process knows; None when the call cannot take
        the warm path anyway (unknown key, no Redis). A last-used write due is queued
        (services.api_key_touch_later), not a reason to leave the warm path."""
        from llmconn import versions
        from llmconn.rediscache import async_client_and_key
        from llmconn.throttling import gateway_window, window_commands

        from .keys import cached_identity
        from .resolution import cached_scopes

        hit = cached_identity(bearer_token(authorization))
        if hit is None:
            return None
        scopes = list(dict.fromkeys([*(s for s, _ in hit[0]),
                                     *cached_scopes(hit[1].scope_id)]))
        try:
            client, _ = async_client_and_key(versions.GLOBAL)
            _, version_keys = versions.full_keys(scopes)
        except Exception:  # noqa: BLE001 - Redis trouble: the sync path knows what to do
            return None
        if client is None or version_keys is None:
            return None
        window = gateway_window(hit[1].key_id)
        commands: list[tuple] = [("MGET", *version_keys)]
        throttle_key = None
        if window is not None:
            _, throttle_key = async_client_and_key(window[0])
            commands += window_commands(throttle_key, window[1])

        async def round_trip():
            # One connection, the commands sent as one packet and their replies read: half
            # the CPU of redis.asyncio's pipeline object, which matters on every call.
            pool = client.connection_pool
            conn = await pool.get_connection()
            try:
                await conn.send_packed_command(conn.pack_commands(commands))
                return [await conn.read_response() for _ in commands]
            except BaseException:
                await conn.disconnect()  # (replies left unread: never back in use as is)
                raise
            finally:
                await pool.release(conn)

        task = asyncio.get_running_loop().create_task(round_trip())
        return cls(hit, window, client, throttle_key, task, scopes)

    async def areplies(self) -> list | None:
        """[[version of each scope], (throttle replies...)]; None when Redis failed."""
        task, self._task = self._task, None
        if task is not None:
            try:
                self._replies = list(await task)
            except Exception:  # noqa: BLE001
                self._replies = None
        return self._replies

    def replies(self) -> list | None:
        """The replies `areplies` read (None before, or when Redis failed)."""
        return self._replies

    async def discard(self) -> None:
        """The request was refused before its call was planned: take the count back."""
        if await self.areplies() is not None and self._throttle_key is not None:
            try:
                await self._client.decr(self._throttle_key)
            except Exception:  # noqa: BLE001 - one call too many counted, at worst
                pass


def _context_warm(authorization: str | None, model: str, endpoint: str,
                  check: WarmCheck | None = None):
    """The warm path of `_context`, run on the event loop without a hand-off to the sync thread.

    Taken when this process already knows the API key and the resolution (with the versions
    of the scopes they depend on), and there are no budgets and no fallbacks for the call (their counters and cool-down flags are read by the sync path). Then the whole
    call costs one Redis round trip (`check`, a WarmCheck the view sent before it parsed the
    body; None for a call this process cannot take warm). An entry whose versions moved is
    not used (same rule as the sync path: an edit takes effect on the next call). Returns
    (identity, Plan) when the call can go on; None to take the sync path; (key id, wait) to
    take it with the throttle already counted. Raises the same errors `_context` would for the
    same state.
    """
    from llmconn.versions import Versions

    from .budgets import cached_budgets
    from .resolution import resolve_model_cached

    if check is None:  # (the view's WarmCheck.start found nothing to check: a cold call)
        return None
    key_deps, identity = check.hit
    window = check.window
    replies = check.replies()
    if replies is None:
        return None
    wait = None
    if window is not None and int(replies[2]) > window[2]:
        wait = max(1.0, window[3] - time.time())
    counted = (identity.key_id, wait) if window is not None else None
    revision = Versions({s: None if v is None else int(v)
                         for s, v in zip(check.scopes, replies[0], strict=True)}, frozen=True)
    if not revision.current(key_deps):
        return counted
    if wait is not None:
        raise gateway_throttled(wait)
    resolved = resolve_model_cached(workspace_id=identity.scope_id, model=model,
                                    endpoint=endpoint, revision=revision)
    if resolved is None or resolved.fallback_chain:
        return counted
    budgets = cached_budgets(revision)
    if budgets is None:
        return counted
    if budgets and (budgets.get(("workspace", str(identity.scope_id)))
                    or budgets.get(("connection", resolved.connection_id))):
        return counted
    return identity, calls.Plan(workspace_id=resolved.workspace_id, api_key_id=identity.key_id,
                                endpoint=endpoint, candidates=(resolved,), revision=revision,
                                user_id=identity.user_id)


def traced(view):
    """Run a /v1 view under one request id (llmconn.tracing): the client's `x-request-id` when
    it is plain and short, else a fresh one (unless the ASGI handler already set one), and
    answer it in the `x-request-id` header. A streamed answer's body runs under it too."""

    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        rid = tracing.current_request_id() or tracing.accept_request_id(
            request.headers.get(tracing.HEADER))
        token = tracing.set_request_id(rid)
        try:
            response = await view(request, *args, **kwargs)
        finally:
            tracing.reset_request_id(token)
        response[tracing.HEADER] = rid
        if response.streaming:
            response.streaming_content = _under_request_id(response.streaming_content, rid)
        return response

    return wrapper


async def _under_request_id(content, rid: str):
    token = tracing.set_request_id(rid)
    try:
        async for part in content:
            yield part
    finally:
        tracing.reset_request_id(token)
        closer = getattr(content, "aclose", None)
        if closer is not None:
            await closer()


def conform_chat(response: dict) -> dict:
    """A chat completion as OpenAI's schema requires it (CreateChatCompletionResponse): the
    nullable fields it requires (`logprobs`, `message.content`, `message.refusal`) present
    even where a provider or litellm left them out. Changes nothing else."""
    for choice in response.get("choices") or []:
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            choice.setdefault("finish_reason", None)
            message = choice.get("message")
            if isinstance(message, dict):
                message.setdefault("content", None)
                message.setdefault("refusal", None)
    return response


def conform_chunk(chunk: dict) -> dict:
    """A stream chunk as CreateChatCompletionStreamResponse requires it (each choice has
    `delta`, `finish_reason`, `index`)."""
    for i, choice in enumerate(chunk.get("choices") or []):
        if isinstance(choice, dict):
            choice.setdefault("delta", {})
            choice.setdefault("finish_reason", None)
            choice.setdefault("index", i)
    return chunk


def _label(resolved: Resolved) -> str:
    return f"{resolved.provider_label}, connection {resolved.connection_name!r}"


def _application_error(exc: ApplicationError) -> GatewayError:
    status = exc.status_code
    return GatewayError(status, exc.message, code=exc.code,
                        type_="invalid_request_error" if status < 500 else "server_error")


# What can stop a call before any provider answered: a bad request, an exhausted budget, a
# domain refusal (role not configured...), or a failure while resolving (e.g. OAuth token).
REFUSALS = (GatewayError, BudgetExceeded, ApplicationError, ProviderError)


def _refusal_response(exc: Exception) -> JsonResponse:
    """The response for one of REFUSALS, in OpenAI's error format."""
    if isinstance(exc, GatewayError):
        return exc.response()
    if isinstance(exc, BudgetExceeded):
        return _budget_response(exc)
    if isinstance(exc, ApplicationError):
        return _application_error(exc).response()
    return _provider_error_response(exc, None)


def _method_not_allowed(allowed: str) -> JsonResponse:
    return GatewayError(405, f"Method not allowed: use {allowed}.",
                        code="method_not_allowed").response()


def _chat_body(request) -> dict:
    """The checked body of a chat completion request (GatewayError when it is not valid)."""
    body = _parse_body(request)
    _check_fields(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise GatewayError(400, "`messages` must be a non-empty list of objects with a "
                           "`role`.", code="invalid_messages", param="messages")
    return body


def _embedding_body(request) -> tuple[dict, str | list, str]:
    """(body, input, encoding format) of an embeddings request (GatewayError when not valid)."""
    body = _parse_body(request)
    _check_fields(body)
    data = body.get("input")
    ok = isinstance(data, str) and data != "" or isinstance(data, list) and data and all(
        isinstance(x, str) or isinstance(x, int) and not isinstance(x, bool)
        or isinstance(x, list) and all(isinstance(t, int) for t in x) for x in data)
    if not ok:
        raise GatewayError(400, "`input` must be a non-empty string or list of strings (or "
                           "token lists).", code="invalid_input", param="input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise GatewayError(400, "`encoding_format` must be float or base64.",
                           code="invalid_encoding_format", param="encoding_format")
    return body, data, fmt


async def _plan_request(request, parse, endpoint: str):
    """(what `parse(request)` returned, Plan) of a gateway call, or the JsonResponse refusing it.

    The warm path's Redis round trip (WarmCheck) is sent first and read once the body is
    checked, so the two overlap."""
    authorization = request.headers.get("Authorization")
    check = WarmCheck.start(authorization)
    try:
        parsed = parse(request)
    except BaseException as exc:
        if check is not None:
            await check.discard()
        if isinstance(exc, GatewayError):
            return exc.response()
        raise
    body = parsed[0] if isinstance(parsed, tuple) else parsed
    model = body["model"].strip()
    if endpoint == "embeddings" and model in ROLES:
        model = "embedding"  # a role name on /v1/embeddings means the embedding role
    try:
        _identity, plan = await _context_async(authorization, model, endpoint, check)
        if endpoint == "embeddings":
            plan = embeddings_capable(plan)
    except REFUSALS as exc:
        return _refusal_response(exc)
    return parsed, plan


def _can_embed(resolved: Resolved) -> bool:
    from providers.base import EMBEDDINGS, find_provider

    spec = find_provider(resolved.provider)
    return spec is not None and EMBEDDINGS in spec.capabilities


def embeddings_capable(plan: calls.Plan) -> calls.Plan:
    """The plan without candidates whose provider has no embeddings endpoint (a 400 when none
    is left): embedding calls go only to connections with the embeddings capability."""
    capable = tuple(c for c in plan.candidates if _can_embed(c))
    if len(capable) == len(plan.candidates):
        return plan
    if not capable:
        first = plan.candidates[0]
        raise GatewayError(
            400, f"The connection {first.connection_name!r} ({first.provider_label}) has no "
            "embeddings endpoint: bind an embeddings-capable connection to the workspace's "
            "`embedding` role.", code="unsupported_endpoint", param="model")
    first_call = plan.first_call if capable[0] is plan.candidates[0] else None
    return dataclasses.replace(plan, candidates=capable, first_call=first_call)


async def _call(plan: calls.Plan, provider_call, params: dict, *, stream: bool = False,
                chat: bool = False):
    """(result, Attempt) of `provider_call` (providers.forward.chat, chat_stream or embed) on the
    plan's candidates, or the error response when none answered. `chat`: each candidate's
    default_params are added under the request's own fields."""
    async def invoke(resolved: Resolved, call: dict):
        return await provider_call(call=call, params=resolved.chat_params(params) if chat
                                   else params, label=_label(resolved),
                                   endpoint=resolved.endpoint, timeout=resolved.call_timeout)

    try:
        return await calls.attempt(plan, invoke, stream=stream)
    except calls.CallFailed as failed:
        return _provider_error_response(failed.error, failed.attempt)


@csrf_exempt
@traced
async def chat_completions(request):
    """POST /v1/chat/completions (JSON, or SSE when `stream` is true)."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    planned = await _plan_request(request, _chat_body, "chat")
    if isinstance(planned, JsonResponse):
        return planned
    body, plan = planned
    params = {k: v for k, v in body.items() if k not in NOT_FORWARDED}

    if not body.get("stream"):
        called = await _call(plan, provider_forward.chat, params, chat=True)
        if isinstance(called, JsonResponse):
            return called
        response, attempt = called
        tokens_in, tokens_out = provider_forward.usage_of(response)
        source = "provider"
        if not response.get("usage"):  # a provider that does not report usage: count it
            generated = Generated()
            generated.add({"choices": [{"delta": c.get("message") or {}}
                                       for c in response.get("choices") or []
                                       if isinstance(c, dict)]})
            tokens_in, tokens_out = await aestimate(
                model=attempt.resolved.litellm_model, messages=params.get("messages"),
                tools=params.get("tools"), output_text=generated.text)
            source = "estimated"
        await calls.record(plan, attempt, stream=False, status=200, input_tokens=tokens_in,
                           output_tokens=tokens_out, usage_source=source)
        return JsonResponse(conform_chat(response), headers=_answer_headers(attempt))

    # chat_stream returns once the first chunk arrived: failures before it fall back, later
    # ones not.
    called = await _call(plan, provider_forward.chat_stream, params, stream=True, chat=True)
    if isinstance(called, JsonResponse):
        return called
    chunks, attempt = called
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events():
        usage = [0, 0]
        status, error_class = 200, ""
        recorded = False
        reported = False  # the provider sent usage
        generated = Generated()  # what was streamed, to count it if the provider does not
        last: dict = {}

        async def estimate() -> None:
            """Count the call with litellm's token counter (usage_source "estimated")."""
            usage[:] = await aestimate(model=attempt.resolved.litellm_model,
                                       messages=params.get("messages"),
                                       tools=params.get("tools"), output_text=generated.text)

        async def write() -> None:
            source = "provider"
            if not reported:
                await estimate()
                source = "estimated"
            await calls.record(plan, attempt, stream=True, status=status,
                               error_class=error_class, input_tokens=usage[0],
                               output_tokens=usage[1], usage_source=source)

        async def record_once():
            nonlocal recorded
            if not recorded:
                recorded = True
                # Shielded: a client that went away is still charged for what was generated.
                await asyncio.shield(write())

        try:
            async for chunk in chunks:
                generated.add(chunk)
                last = chunk
                if chunk.get("usage"):
                    reported = True
                    usage[:] = provider_forward.usage_of(chunk)
                    if not wants_usage:
                        chunk.pop("usage")
                        if not any(c.get("delta") or c.get("finish_reason")
                                   for c in chunk.get("choices") or []):
                            continue
                    elif not any(c.get("delta") or c.get("finish_reason")
                                 for c in chunk.get("choices") or []):
                        chunk["choices"] = []  # as OpenAI sends the usage chunk
                yield f"data: {json.dumps(conform_chunk(chunk))}\n\n"
            # As for a non-streamed call: once the client has the whole answer, its usage row
            # is committed (and the next call of a client that waits for `[DONE]` does not
            # share the process with this one's write).
            await chunks.aclose()
            await record_once()
            if wants_usage and not reported:
                # The provider ignored include_usage (llama.cpp): the client still gets the
                # usage chunk it asked for, with the counts that were recorded.
                yield "data: " + json.dumps({
                    "id": last.get("id") or "chatcmpl-llmconn", "object": "chat.completion.chunk",
                    "created": last.get("created") or int(time.time()),
                    "model": last.get("model") or attempt.resolved.model, "choices": [],
                    "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                              "total_tokens": usage[0] + usage[1]}}) + "\n\n"
            yield "data: [DONE]\n\n"
        except ProviderError as err:
            status, error_class = err.status, err.error_class
            await chunks.aclose()
            await record_once()
            yield f"data: {json.dumps(err.as_openai())}\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            status, error_class = 499, "client_closed"
            raise
        finally:
            await chunks.aclose()  # the upstream stream too, if the client went away
            await record_once()

    response = StreamingHttpResponse(events(), content_type="text/event-stream",
                                     headers={**_answer_headers(attempt),
                                              "Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
    return response


@csrf_exempt
@traced
async def embeddings(request):
    """POST /v1/embeddings (floats, or base64 float32 when `encoding_format` is "base64")."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    planned = await _plan_request(request, _embedding_body, "embeddings")
    if isinstance(planned, JsonResponse):
        return planned
    (body, data, fmt), plan = planned
    params = {k: v for k, v in body.items() if k not in NOT_FORWARDED}

    called = await _call(plan, provider_forward.embed, params)
    if isinstance(called, JsonResponse):
        return called
    response, attempt = called
    tokens_in, _ = provider_forward.usage_of(response)
    if fmt == "base64":
        # OpenAI-wire providers encoded it themselves (strings are left alone); floats (litellm
        # paths, or a provider that ignores encoding_format) are encoded here.
        try:
            provider_forward.encode_embeddings(response, label=_label(attempt.resolved))
        except ProviderError as err:
            await calls.record(plan, attempt, stream=False, status=err.status,
                               error_class=err.error_class, input_tokens=tokens_in)
            return _provider_error_response(err, attempt)
    response.setdefault("model", attempt.resolved.model)
    await calls.record(plan, attempt, stream=False, status=200, input_tokens=tokens_in)
    return JsonResponse(response, headers=_answer_headers(attempt))


def _models_context(authorization: str | None) -> list[dict]:
    raw = bearer_token(authorization)
    revision = current_revision(*_scopes_of(raw))
    if raw is None:
        raise GatewayError(401, "Missing API key: send `Authorization: Bearer lck_...`.",
                           code="missing_api_key")
    identity = authenticate_key(raw, revision=revision)
    if identity is None:
        raise GatewayError(401, "Invalid or revoked API key.", code="invalid_api_key")
    services.api_key_touch_later(api_key_id=identity.key_id)
    services.api_key_touch_flush(if_due=True)
    rows = workspace_models(workspace_id=identity.scope_id, revision=revision)
    return [_model_row(row, created) for row, created in zip(rows, _created(rows), strict=True)]


def _created(rows: list[dict]) -> list[int]:
    """A real Unix time per listed model: the `created` the provider's own listing gave (kept
    by discovery), else when it was discovered, else when its connection was created."""
    from connections.models import Connection, DiscoveredModel

    ids = {r["connection_id"] for r in rows}
    made = {str(pk): at for pk, at in
            Connection.objects.filter(pk__in=ids).values_list("pk", "created_at")}
    found = {}
    for conn_id, model_id, at, meta in DiscoveredModel.objects.filter(
            connection_id__in=ids).values_list("connection_id", "model_id", "discovered_at",
                                               "metadata"):
        created = (meta or {}).get("created") if isinstance(meta, dict) else None
        found[(str(conn_id), model_id)] = created if isinstance(created, int) and \
            not isinstance(created, bool) and created > 0 else int(at.timestamp())
    out = []
    for row in rows:
        stamp = found.get((str(row["connection_id"]), row["model"]))
        if stamp is None:
            conn_made = made.get(str(row["connection_id"]))
            stamp = int(conn_made.timestamp()) if conn_made else int(time.time())
        out.append(stamp)
    return out


def _model_row(row: dict, created: int) -> dict:
    """OpenAI's Model: `owned_by` is the provider's name (the catalog's), `created` real."""
    from providers.base import find_provider

    spec = find_provider(row["provider"])
    return {"id": row["id"], "object": "model", "created": created,
            "owned_by": spec.name if spec else row["provider"]}


@csrf_exempt
@traced
async def models(request, model_id: str | None = None):
    """GET /v1/models (role names first, then the bound connections' models), /v1/models/{id}."""
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        rows = await sync_to_async(_models_context)(
            request.headers.get("Authorization"))
    except GatewayError as err:
        return err.response()
    if model_id is None:
        return JsonResponse({"object": "list", "data": rows})
    for row in rows:
        if row["id"] == model_id:
            return JsonResponse(row)
    return GatewayError(404, f"The model {model_id!r} does not exist in this workspace.",
                        code="model_not_found").response()


@traced
async def not_found(request, path: str = ""):
    """Anything else under /v1/: 404 in OpenAI's format."""
    return GatewayError(404, f"Unknown endpoint /v1/{path}.", code="not_found").response()
