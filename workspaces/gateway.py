"""The OpenAI-compatible gateway: /v1/chat/completions, /v1/embeddings, /v1/models.

Async Django views (served by uvicorn). A request is authenticated by a workspace API key,
its `model` (a role name or a model a bound connection offers) is resolved to a connection
(cached per process, see resolution.py), the call goes to the provider through
providers.gateway, and a UsageRecord is written. Errors use OpenAI's format
`{"error": {"message", "type", "code", "param"}}`; errors that come from the provider say so
and never use 401 (which here means "your llmconn key is not valid").
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from llmconn.errors import ApplicationError
from llmconn.throttling import check_gateway_key, gateway_throttled
from providers import gateway as provider_gateway
from providers.gateway import ProviderCallError

from . import calls, services
from .budgets import BudgetExceeded
from .keys import KeyIdentity, authenticate_key, bearer_token
from .resolution import Resolved, current_revision, resolve_model, workspace_models

logger = logging.getLogger(__name__)

# Fields that would send the call (and the stored key) somewhere else, or change how we
# authenticate upstream: always refused.
REDIRECT_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "extra_headers", "headers",
    "extra_query", "extra_body", "custom_llm_provider", "organization", "azure_ad_token",
    "azure_ad_token_provider", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "aws_region_name", "aws_profile_name", "aws_role_name", "vertex_project", "vertex_location",
    "vertex_credentials", "litellm_params", "model_list", "deployment_id", "proxy", "proxies",
    "client", "http_client", "mock_response", "input_cost_per_token", "output_cost_per_token",
    "litellm_call_id", "litellm_logging_obj", "callbacks", "timeout", "num_retries",
    "max_retries",
})
CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "logprobs", "top_logprobs", "user", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "seed", "functions", "function_call",
    "reasoning_effort", "modalities", "audio", "prediction", "service_tier", "top_k",
    "web_search_options", "verbosity", "safety_identifier", "prompt_cache_key",
    # accepted and not forwarded: OpenAI's stored-completions options
    "store", "metadata",
})
NOT_FORWARDED = frozenset({"model", "stream", "stream_options", "store", "metadata"})
EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
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
        headers = {"WWW-Authenticate": 'Bearer realm="llmconn"'} if self.status == 401 else None
        return JsonResponse(body, status=self.status, headers=headers)


def _provider_error_response(err: ProviderCallError, attempt: calls.Attempt | None
                             ) -> JsonResponse:
    headers = {}
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
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


def _parse_body(request) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise GatewayError(413, "The request body is too large.", code="request_too_large")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "The body must be JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The body must be a JSON object.", code="invalid_json")
    return body


def _check_fields(body: dict, allowed: frozenset[str]) -> None:
    redirect = sorted(set(body) & REDIRECT_FIELDS)
    if redirect:
        raise GatewayError(
            400, f"Field(s) {', '.join(redirect)} are not accepted: the workspace's binding "
            "decides where a call goes and with which credentials.",
            code="forbidden_parameter", param=redirect[0])
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise GatewayError(400, f"Unrecognized request argument(s) supplied: "
                           f"{', '.join(unknown)}.", code="unknown_parameter", param=unknown[0])
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
    resolved = resolve_model(workspace_id=identity.workspace_id, model=model,
                             endpoint=endpoint, revision=revision)
    plan = calls.plan_call(resolved=resolved, api_key_id=identity.key_id, endpoint=endpoint,
                           revision=revision)
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
    return [*(s for s, _ in hit[0]), *cached_scopes(hit[1].workspace_id)]


_context_sync = sync_to_async(_context)


async def _context_async(authorization: str | None, model: str, endpoint: str,
                         check: WarmCheck | None = None) -> tuple[KeyIdentity, calls.Plan]:
    """`_context`, on the event loop when everything it needs is in this process's memory
    (`_context_warm`, with the round trip `check` already sent if given), else on the sync
    thread."""
    warm = _context_warm(authorization, model, endpoint, check)
    if isinstance(warm, tuple) and len(warm) == 2 and isinstance(warm[1], calls.Plan):
        plan = warm[1]
        services.api_key_touch_later(api_key_id=warm[0].key_id)
        if services.api_key_touch_pending():
            _schedule_touch_flush()
        # As plan_call(with_call=True), without blocking (an OAuth token is fetched async).
        try:
            plan.first_call = await calls._acall_kwargs(plan.candidates[0])
        except ProviderCallError as err:
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
    """The warm path's one Redis round trip, sent before the request body is parsed.

    When this process already knows a request's API key, the versions of the cache scopes its
    cached key and resolutions depend on (one MGET, llmconn.versions) and the key's throttle
    count are asked for as soon as the view starts (`start`), and the replies are read
    once the body is checked and the call is planned (`replies`): the round trip overlaps that
    work instead of adding to it. Nothing goes to a provider before the replies are read, so an
    edit, a revoked key or a throttled key still takes effect on the very next call. A request
    refused for its body is not counted (`discard` takes its throttle count back), as on the
    cold path, where the throttle is counted only for a call that is going to be made.

    Uses one connection of the cache's Redis pool (redis-py's `send_packed_command` /
    `read_response`); any Redis trouble makes `replies` None and the call takes the sync path,
    which knows what to do.
    """

    __slots__ = ("hit", "window", "scopes", "_client", "_throttle_key", "_conn", "_count",
                 "_replies")

    def __init__(self, hit, window, client, throttle_key, conn, count, scopes=()):
        self.hit, self.window, self._client = hit, window, client
        self.scopes = scopes
        self._throttle_key, self._conn, self._count = throttle_key, conn, count
        self._replies: list | None = None

    @classmethod
    def start(cls, authorization: str | None) -> WarmCheck | None:
        """Send the round trip for a key this process knows; None when the call cannot take
        the warm path anyway (unknown key, no Redis). A last-used write due is queued
        (services.api_key_touch_later), not a reason to leave the warm path."""
        from llmconn import versions
        from llmconn.rediscache import client_and_key
        from llmconn.throttling import gateway_window

        from .keys import cached_identity
        from .resolution import cached_scopes

        hit = cached_identity(bearer_token(authorization))
        if hit is None:
            return None
        scopes = list(dict.fromkeys([*(s for s, _ in hit[0]),
                                     *cached_scopes(hit[1].workspace_id)]))
        client, version_keys = versions.full_keys(scopes)
        if client is None:
            return None
        window = gateway_window(hit[1].key_id)
        commands: list[tuple] = [("MGET", *version_keys)]
        throttle_key = None
        if window is not None:
            _, throttle_key = client_and_key(window[0])
            commands += [("SET", throttle_key, 0, "EX", window[1], "NX"),
                         ("INCR", throttle_key)]
        pool = client.connection_pool
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command(conn.pack_commands(commands))
        except Exception:  # noqa: BLE001 - Redis trouble: the sync path knows what to do
            if conn is not None:
                conn.disconnect()
                pool.release(conn)
            return None
        return cls(hit, window, client, throttle_key, conn, len(commands), scopes)

    def replies(self) -> list | None:
        """[[version of each scope], (SET reply, count)]; None when Redis failed. Read once; the connection goes
        back to the pool as soon as they are read."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._replies = [conn.read_response() for _ in range(self._count)]
            except Exception:  # noqa: BLE001
                conn.disconnect()
            finally:
                self._client.connection_pool.release(conn)
        return self._replies

    def discard(self) -> None:
        """The request was refused before its call was planned: read the replies (a connection
        with unread replies must not go back to the pool) and take the count back."""
        replies = self.replies()
        if replies is not None and self._throttle_key is not None:
            self._replies = None
            try:
                self._client.decr(self._throttle_key)
            except Exception:  # noqa: BLE001 - one call too many counted, at worst
                pass


def _context_warm(authorization: str | None, model: str, endpoint: str,
                  check: WarmCheck | None = None):
    """The warm path of `_context`, run on the event loop without a hand-off to the sync thread.

    Taken when this process already knows the API key and the resolution (with the versions
    of the scopes they depend on), the key's last-used time needs no write, and there are no budgets and no fallbacks
    for the call (their counters and cool-down flags are read by the sync path). Then the whole
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
    resolved = resolve_model_cached(workspace_id=identity.workspace_id, model=model,
                                    endpoint=endpoint, revision=revision)
    if resolved is None or resolved.fallback_chain:
        return counted
    budgets = cached_budgets(revision)
    if budgets is None:
        return counted
    if budgets and (budgets.get(("workspace", str(identity.workspace_id)))
                    or budgets.get(("connection", resolved.connection_id))):
        return counted
    return identity, calls.Plan(workspace_id=resolved.workspace_id, api_key_id=identity.key_id,
                                endpoint=endpoint, candidates=(resolved,), revision=revision)


def _label(resolved: Resolved) -> str:
    return f"{resolved.provider_label}, connection {resolved.connection_name!r}"


def _application_error(exc: ApplicationError) -> GatewayError:
    status = exc.status_code
    return GatewayError(status, exc.message, code=exc.code,
                        type_="invalid_request_error" if status < 500 else "server_error")


# What can stop a call before any provider answered: a bad request, an exhausted budget, a
# domain refusal (role not configured...), or a failure while resolving (e.g. OAuth token).
REFUSALS = (GatewayError, BudgetExceeded, ApplicationError, ProviderCallError)


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
    _check_fields(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise GatewayError(400, "`messages` must be a non-empty list of objects with a "
                           "`role`.", code="invalid_messages", param="messages")
    return body


def _embedding_body(request) -> tuple[dict, str | list, str]:
    """(body, input, encoding format) of an embeddings request (GatewayError when not valid)."""
    body = _parse_body(request)
    _check_fields(body, EMBEDDING_FIELDS)
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
            check.discard()
        if isinstance(exc, GatewayError):
            return exc.response()
        raise
    body = parsed[0] if isinstance(parsed, tuple) else parsed
    try:
        _identity, plan = await _context_async(authorization, body["model"].strip(), endpoint,
                                               check)
    except REFUSALS as exc:
        return _refusal_response(exc)
    finally:
        if check is not None:
            check.replies()  # (already read, unless something failed first)
    return parsed, plan


async def _call(plan: calls.Plan, provider_call, params: dict, *, stream: bool = False):
    """(result, Attempt) of `provider_call` (providers.gateway.chat, chat_stream or embed) on the
    plan's candidates, or the error response when none answered."""
    async def invoke(resolved: Resolved, call: dict):
        return await provider_call(call=call, params=params, label=_label(resolved),
                                   endpoint=resolved.endpoint, timeout=resolved.call_timeout)

    try:
        return await calls.attempt(plan, invoke, stream=stream)
    except calls.CallFailed as failed:
        return _provider_error_response(failed.error, failed.attempt)


@csrf_exempt
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
        called = await _call(plan, provider_gateway.chat, params)
        if isinstance(called, JsonResponse):
            return called
        response, attempt = called
        tokens_in, tokens_out = provider_gateway.usage_of(response)
        await calls.record(plan, attempt, stream=False, status=200, input_tokens=tokens_in,
                           output_tokens=tokens_out)
        return JsonResponse(response, headers=_answer_headers(attempt))

    # chat_stream returns once the first chunk arrived: failures before it fall back, later
    # ones not.
    called = await _call(plan, provider_gateway.chat_stream, params, stream=True)
    if isinstance(called, JsonResponse):
        return called
    chunks, attempt = called
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events():
        usage = [0, 0]
        status, error_class = 200, ""
        recorded = False

        async def record_once():
            nonlocal recorded
            if not recorded:
                recorded = True
                await asyncio.shield(calls.record(
                    plan, attempt, stream=True, status=status, error_class=error_class,
                    input_tokens=usage[0], output_tokens=usage[1]))

        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage[:] = provider_gateway.usage_of(chunk)
                    if not wants_usage:
                        chunk.pop("usage")
                        if not any(c.get("delta") or c.get("finish_reason")
                                   for c in chunk.get("choices") or []):
                            continue
                    elif not any(c.get("delta") or c.get("finish_reason")
                                 for c in chunk.get("choices") or []):
                        chunk["choices"] = []  # as OpenAI sends the usage chunk
                yield f"data: {json.dumps(chunk)}\n\n"
            # As for a non-streamed call: once the client has the whole answer, its usage row
            # is committed (and the next call of a client that waits for `[DONE]` does not
            # share the process with this one's write).
            await chunks.aclose()
            await record_once()
            yield "data: [DONE]\n\n"
        except ProviderCallError as err:
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


def _to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@csrf_exempt
async def embeddings(request):
    """POST /v1/embeddings (floats, or base64 float32 when `encoding_format` is "base64")."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    planned = await _plan_request(request, _embedding_body, "embeddings")
    if isinstance(planned, JsonResponse):
        return planned
    (body, data, fmt), plan = planned
    params = {"input": data}
    for name in ("dimensions", "user"):
        if body.get(name) is not None:
            params[name] = body[name]

    called = await _call(plan, provider_gateway.embed, params)
    if isinstance(called, JsonResponse):
        return called
    response, attempt = called
    if fmt == "base64":
        for item in response.get("data") or []:
            if isinstance(item.get("embedding"), list):
                item["embedding"] = _to_base64(item["embedding"])
    tokens_in, _ = provider_gateway.usage_of(response)
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
    return workspace_models(workspace_id=identity.workspace_id, revision=revision)


def _model_row(row: dict) -> dict:
    return {"id": row["id"], "object": "model", "created": 0, "owned_by": row["owned_by"]}


@csrf_exempt
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
        return JsonResponse({"object": "list", "data": [_model_row(r) for r in rows]})
    for row in rows:
        if row["id"] == model_id:
            return JsonResponse(_model_row(row))
    return GatewayError(404, f"The model {model_id!r} does not exist in this workspace.",
                        code="model_not_found").response()


async def not_found(request, path: str = ""):
    """Anything else under /v1/: 404 in OpenAI's format."""
    return GatewayError(404, f"Unknown endpoint /v1/{path}.", code="not_found").response()
