"""Step 3 of a /v1 call: the views llmconn.asgi routes to (GATEWAY_ROUTES), which call the
provider through providers.forward (trying the plan's candidates in order, calls.attempt),
write the UsageRecord (calls.record) and answer: JSON, or SSE relayed chunk by chunk
(`relay_stream`). Each runs under one request id (`traced`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from llmconn import tracing
from providers import forward as provider_forward
from providers.errors import ProviderError
from providers.tokens import Generated, aestimate

from .. import calls, services
from ..keys import authenticate_key, bearer_token
from ..resolution import Resolved, current_revision, workspace_models
from .errors import GatewayError, _answer_headers, _method_not_allowed, _provider_error_response
from .planning import _scopes_of, plan_request
from .request import NOT_FORWARDED, chat_body, embedding_body

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


async def _call(plan: calls.Plan, provider_call, params: dict, *, stream: bool = False,
                chat: bool = False):
    """(result, Attempt) of `provider_call` (providers.forward.chat, chat_stream or embed) on the
    plan's candidates, or the error response when none answered. `chat`: each candidate's
    default_params are added under the request's own fields."""
    async def invoke(resolved: Resolved, call: dict):
        return await provider_call(call=call, params=resolved.chat_params(params) if chat
                                   else params, label=calls.label(resolved),
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
    planned = await plan_request(request, chat_body, "chat")
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

    return StreamingHttpResponse(
        relay_stream(plan, attempt, chunks, params, wants_usage),
        content_type="text/event-stream",
        headers={**_answer_headers(attempt), "Cache-Control": "no-cache",
                 "X-Accel-Buffering": "no"})


async def relay_stream(plan: calls.Plan, attempt: calls.Attempt, chunks, params: dict,
                       wants_usage: bool):
    """The SSE events of a streamed chat completion: each provider chunk as OpenAI's schema
    has it, the usage chunk when asked for (counted here when the provider does not report
    it), then `[DONE]`, or an error event when the provider fails mid-stream. The usage row is
    written once, before the last event (also when the client goes away: 499)."""
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


@csrf_exempt
@traced
async def embeddings(request):
    """POST /v1/embeddings (floats, or base64 float32 when `encoding_format` is "base64")."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    planned = await plan_request(request, embedding_body, "embeddings")
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
            provider_forward.encode_embeddings(response, label=calls.label(attempt.resolved))
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
