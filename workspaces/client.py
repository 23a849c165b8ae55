"""The Python client: how other Python code calls models through a workspace.

    client = WorkspaceClient("research")
    reply = await client.complete([Message.user("Weather in Paris?")], tools=[weather_tool],
                                  system="Be brief.")
    if reply.tool_calls:
        call = reply.tool_calls[0]          # ToolCall(id, name, arguments: dict)
    async for chunk in client.stream([Message.user("Tell me a story")]):
        if chunk.type == "delta": print(chunk.text, end="")
    vectors = await client.embed(["some text"])

Calls go through the same resolution (hot-reloaded, see resolution.py), orchestration
(calls.py: budgets, fallbacks, cool-down) and provider layer (providers.forward) as the /v1
gateway, and record usage the same way (without an API key). A used-up budget raises
LLMError(code="budget_exceeded", status=429) with `budget` saying which and when it resets.
Whatever the provider, results have one shape: the system prompt is placed where the provider
expects it (Anthropic's top-level `system`, a system message elsewhere) and tool calls are
`ToolCall`s with parsed arguments for OpenAI- and Anthropic-style providers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from asgiref.sync import sync_to_async

from llmconn import tracing
from llmconn.errors import ApplicationError
from providers import forward as provider_forward
from providers.errors import ProviderError
from providers.tokens import Generated, aestimate

from . import calls
from .budgets import BudgetExceeded
from .gateway.errors import GatewayError
from .gateway.planning import embeddings_capable
from .gateway.request import forbidden_fields
from .models import Workspace
from .resolution import ROLES, Resolved, current_revision, resolve, resolve_model


class LLMError(Exception):
    """A call that failed: ours (not configured, budget used up...) or the provider's
    (`error_class` says; `message` then carries the provider's own explanation, scrubbed, and
    `type`/`param` its own). `budget`: the used-up budget (with `resets_at`) for
    budget_exceeded. `request_id`: the id of the call in logs and usage rows."""

    def __init__(self, message: str, *, code: str, status: int, error_class: str = "",
                 budget: dict | None = None, param: str | None = None,
                 type: str | None = None):  # noqa: A002 - OpenAI's name
        super().__init__(message)
        self.message, self.code, self.status, self.error_class = (
            message, code, status, error_class)
        self.budget, self.param, self.type = budget, param, type
        self.request_id = tracing.current_request_id()


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for. `arguments` is parsed JSON ({} if it was not)."""

    id: str
    name: str
    arguments: dict
    raw_arguments: str = ""

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name,
                             "arguments": self.raw_arguments or json.dumps(self.arguments)}}


@dataclass(frozen=True)
class Tool:
    """A function the model may call, described by a JSON schema."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict:
        function = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class Message:
    """One chat message. Build with Message.system/user/assistant/tool."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str | list) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str | None = None, tool_calls: Iterable[ToolCall] = ()
                  ) -> Message:
        return cls("assistant", content, tuple(tool_calls))

    @classmethod
    def tool(cls, tool_call_id: str, content: str | dict) -> Message:
        """The result of a tool call, sent back to the model."""
        text = content if isinstance(content, str) else json.dumps(content)
        return cls("tool", text, tool_call_id=tool_call_id)

    def to_openai(self) -> dict:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        return data


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Response:
    """A model's answer: text and/or tool calls, why it stopped, and what it cost in tokens."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    model: str
    connection: str
    usage: Usage
    raw: dict = field(default_factory=dict, repr=False)

    def as_message(self) -> Message:
        """This answer as the assistant message to append before sending tool results."""
        return Message.assistant(self.text, self.tool_calls)


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed answer.

    - "delta": `text` is the next piece of text;
    - "tool_call": `tool_call` is a complete tool call (sent once its arguments are whole);
    - "done": `response` is the whole answer (text, tool calls, usage);
    - "error": `error` says what failed; nothing follows it.
    """

    type: Literal["delta", "tool_call", "done", "error"]
    text: str = ""
    tool_call: ToolCall | None = None
    response: Response | None = None
    error: LLMError | None = None


def _tool_call(raw: dict) -> ToolCall:
    function = raw.get("function") or {}
    arguments = function.get("arguments") or ""
    if isinstance(arguments, dict):
        parsed, arguments = arguments, json.dumps(arguments)
    else:
        try:
            parsed = json.loads(arguments) if arguments else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
    return ToolCall(id=raw.get("id") or "", name=function.get("name") or "",
                    arguments=parsed, raw_arguments=arguments)


def _messages(messages, system: str | None) -> list[dict]:
    out = []
    if system:
        out.append({"role": "system", "content": system})
    for m in messages:
        if isinstance(m, Message):
            out.append(m.to_openai())
        elif isinstance(m, dict):
            out.append(m)
        else:
            raise TypeError("messages must be Message objects or OpenAI-style dicts")
    return out


def _tools(tools) -> list[dict] | None:
    if not tools:
        return None
    return [t.to_openai() if isinstance(t, Tool) else t for t in tools]


def _error(exc: Exception) -> LLMError:
    if isinstance(exc, ProviderError):
        return LLMError(exc.message, code=exc.code, status=exc.status,
                        error_class=exc.error_class, param=exc.param, type=exc.type)
    if isinstance(exc, GatewayError):
        return LLMError(exc.message, code=exc.code, status=exc.status, param=exc.param,
                        type=exc.type)
    if isinstance(exc, BudgetExceeded):
        return LLMError(exc.message, code=exc.code, status=exc.status_code, budget=exc.budget)
    if isinstance(exc, ApplicationError):
        return LLMError(exc.message, code=exc.code, status=exc.status_code)
    raise exc


class WorkspaceClient:
    """Calls the models bound to a workspace's roles (chat, agent, embedding)."""

    def __init__(self, workspace: str | int | Workspace, *, timeout: float | None = None):
        self._workspace = workspace
        self._workspace_id = workspace.pk if isinstance(workspace, Workspace) else (
            workspace if isinstance(workspace, int) else None)
        self.timeout = timeout

    def _plan_sync(self, role: str, model: str | None, endpoint: str) -> calls.Plan:
        if self._workspace_id is None:
            found = Workspace.objects.filter(slug=self._workspace).values_list("pk", flat=True)
            if not found:
                raise LLMError(f"No workspace {self._workspace!r}.", code="workspace_not_found",
                               status=404)
            self._workspace_id = found[0]
        revision = current_revision()
        if model:
            resolved = resolve_model(workspace_id=self._workspace_id, model=model,
                                     endpoint=endpoint, revision=revision)
        else:
            resolved = resolve(workspace_id=self._workspace_id, role=role, revision=revision)
        return calls.plan_call(resolved=resolved, api_key_id=None, endpoint=endpoint,
                               revision=revision)

    async def _plan(self, role, model, endpoint) -> calls.Plan:
        if endpoint == "embeddings" and model in ROLES:
            model = None  # a role name for embeddings means the embedding role
        try:
            plan = await sync_to_async(self._plan_sync)(role, model, endpoint)
            return embeddings_capable(plan) if endpoint == "embeddings" else plan
        except (ApplicationError, ProviderError, GatewayError) as exc:
            raise _error(exc) from None

    @staticmethod
    def _check(params: dict) -> None:
        """As the gateway: fields that would redirect the call are refused, all others are
        forwarded (OpenAI-wire providers get them as given; litellm maps or refuses them)."""
        forbidden = forbidden_fields(params)
        if forbidden:
            raise LLMError(f"Field(s) {', '.join(forbidden)} are not accepted: the workspace's "
                           "binding decides where a call goes and with which credentials.",
                           code="forbidden_parameter", status=400, param=forbidden[0])

    def _timeout(self, resolved: Resolved) -> float:
        return self.timeout or resolved.call_timeout

    def _params(self, messages, system, tools, tool_choice, params) -> dict:
        self._check(params)
        data = dict(params)
        data["messages"] = _messages(messages, system)
        if tools:
            data["tools"] = _tools(tools)
            if tool_choice is not None:
                data["tool_choice"] = tool_choice
        return data

    async def complete(self, messages: Iterable[Message | dict], *, role: str = "chat",
                       model: str | None = None, system: str | None = None,
                       tools: Iterable[Tool | dict] | None = None, tool_choice=None,
                       **params) -> Response:
        """One answer from the role's model (or `model`, if a bound connection offers it).
        Other keyword arguments are request fields, sent as given (`temperature`, `top_k`...)."""
        with _request_id():
            return await self._complete(messages, role=role, model=model, system=system,
                                        tools=tools, tool_choice=tool_choice, **params)

    async def _complete(self, messages, *, role, model, system, tools, tool_choice, **params):
        body = self._params(messages, system, tools, tool_choice, params)
        plan = await self._plan(role, model, "chat")

        async def invoke(resolved: Resolved, call: dict):
            return await provider_forward.chat(
                call=call, params=resolved.chat_params(body), label=calls.label(resolved),
                endpoint=resolved.endpoint,
                timeout=self._timeout(resolved))

        try:
            raw, attempt = await calls.attempt(plan, invoke)
        except calls.CallFailed as failed:
            raise _error(failed.error) from None
        response = _response(raw, attempt.resolved)
        await calls.record(plan, attempt, stream=False, status=200,
                           input_tokens=response.usage.input_tokens,
                           output_tokens=response.usage.output_tokens)
        return response

    async def stream(self, messages: Iterable[Message | dict], *, role: str = "chat",
                     model: str | None = None, system: str | None = None,
                     tools: Iterable[Tool | dict] | None = None, tool_choice=None,
                     **params) -> AsyncIterator[StreamChunk]:
        """The answer as it comes: "delta" and "tool_call" chunks, then "done" (or "error").

        Fallbacks are tried only before the first chunk; a failure after it is an "error"."""
        with _request_id():
            inner = self._stream(messages, role=role, model=model, system=system, tools=tools,
                                 tool_choice=tool_choice, **params)
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                await inner.aclose()  # a caller that stops early: usage recorded now

    async def _stream(self, messages, *, role, model, system, tools, tool_choice, **params):
        try:
            body = self._params(messages, system, tools, tool_choice, params)
            plan = await self._plan(role, model, "chat")
        except LLMError as exc:
            yield StreamChunk("error", error=exc)
            return

        async def invoke(resolved_: Resolved, call: dict):
            return await provider_forward.chat_stream(
                call=call, params=resolved_.chat_params(body), label=calls.label(resolved_),
                endpoint=resolved_.endpoint,
                timeout=self._timeout(resolved_))

        try:
            chunks, attempt = await calls.attempt(plan, invoke, stream=True)
        except calls.CallFailed as failed:
            yield StreamChunk("error", error=_error(failed.error))
            return
        resolved = attempt.resolved
        text: list[str] = []
        pending: dict[int, dict] = {}  # tool calls being assembled, by index
        tool_calls: list[ToolCall] = []
        finish, usage, model_name = None, Usage(), resolved.model
        status, error_class = 200, ""
        reported, generated = False, Generated()  # counted by us if the provider says nothing

        def flush() -> list[StreamChunk]:
            out = []
            for index in sorted(pending):
                call_ = _tool_call(pending.pop(index))
                tool_calls.append(call_)
                out.append(StreamChunk("tool_call", tool_call=call_))
            return out

        try:
            async for chunk in chunks:
                model_name = chunk.get("model") or model_name
                generated.add(chunk)
                if chunk.get("usage"):
                    reported = True
                    tokens = provider_forward.usage_of(chunk)
                    usage = Usage(*tokens)
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        yield StreamChunk("delta", text=delta["content"])
                    for part in delta.get("tool_calls") or []:
                        slot = pending.setdefault(part.get("index", 0), {
                            "id": "", "function": {"name": "", "arguments": ""}})
                        if part.get("id"):
                            slot["id"] = part["id"]
                        function = part.get("function") or {}
                        if function.get("name"):
                            slot["function"]["name"] = function["name"]
                        if function.get("arguments"):
                            slot["function"]["arguments"] += function["arguments"]
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        for item in flush():
                            yield item
            for item in flush():
                yield item
        except ProviderError as exc:
            status, error_class = exc.status, exc.error_class
            yield StreamChunk("error", error=_error(exc))
            return
        except (GeneratorExit, asyncio.CancelledError):
            status, error_class = 499, "client_closed"
            raise
        finally:
            await chunks.aclose()  # the caller may stop early: release the upstream
            if not reported:  # charged for what was generated, counted by litellm
                usage = Usage(*await asyncio.shield(aestimate(
                    model=resolved.litellm_model, messages=body.get("messages"),
                    tools=body.get("tools"), output_text=generated.text)))
            await calls.record(plan, attempt, stream=True, status=status,
                               error_class=error_class, input_tokens=usage.input_tokens,
                               output_tokens=usage.output_tokens,
                               usage_source="provider" if reported else "estimated")
        yield StreamChunk("done", response=Response(
            text="".join(text) or None, tool_calls=tuple(tool_calls), finish_reason=finish,
            model=model_name, connection=resolved.connection_name, usage=usage))

    async def embed(self, texts: str | Iterable[str], *, model: str | None = None,
                    **params) -> list[list[float]]:
        """Vectors for `texts` from the workspace's embedding role (one per text, in order).
        Other keyword arguments are request fields sent as given (`dimensions`,
        `input_type`...)."""
        with _request_id():
            return await self._embed(texts, model=model, **params)

    async def _embed(self, texts, *, model, **params):
        items = [texts] if isinstance(texts, str) else list(texts)
        params.pop("encoding_format", None)  # vectors are returned as floats
        self._check(params)
        plan = await self._plan("embedding", model, "embeddings")

        async def invoke(resolved: Resolved, call: dict):
            return await provider_forward.embed(call=call, params={**params, "input": items},
                                                label=calls.label(resolved),
                                                endpoint=resolved.endpoint,
                                                timeout=self._timeout(resolved))

        try:
            raw, attempt = await calls.attempt(plan, invoke)
        except calls.CallFailed as failed:
            raise _error(failed.error) from None
        tokens, _ = provider_forward.usage_of(raw)
        await calls.record(plan, attempt, stream=False, status=200, input_tokens=tokens)
        data = sorted(raw.get("data") or [], key=lambda d: d.get("index", 0))
        return [d["embedding"] for d in data]


@contextlib.contextmanager
def _request_id():
    """The call's request id (llmconn.tracing): the one already running (a /v1 request, a
    task), else a fresh one for this call."""
    if tracing.current_request_id() is not None:
        yield
        return
    token = tracing.set_request_id(tracing.new_request_id())
    try:
        yield
    finally:
        tracing.reset_request_id(token)


def _response(raw: dict, resolved: Resolved) -> Response:
    choice = (raw.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict)) or None
    tokens = provider_forward.usage_of(raw)
    return Response(
        text=content, tool_calls=tuple(_tool_call(c) for c in message.get("tool_calls") or []),
        finish_reason=choice.get("finish_reason"), model=raw.get("model") or resolved.model,
        connection=resolved.connection_name, usage=Usage(*tokens), raw=raw)
