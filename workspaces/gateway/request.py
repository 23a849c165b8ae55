"""Step 1 of a /v1 call: the request body read (within LLMCONN_MAX_REQUEST_BYTES), parsed as a
JSON object (nesting limited) and checked: no field that would send the call elsewhere or
change its credentials (FORBIDDEN_FIELDS), `model` present, known fields of the right type,
then what each endpoint requires (`chat_body`, `embedding_body`)."""

from __future__ import annotations

import json

from django.conf import settings

from .errors import GatewayError

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


def chat_body(request) -> dict:
    """The checked body of a chat completion request (GatewayError when it is not valid)."""
    body = _parse_body(request)
    _check_fields(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise GatewayError(400, "`messages` must be a non-empty list of objects with a "
                           "`role`.", code="invalid_messages", param="messages")
    return body


def embedding_body(request) -> tuple[dict, str | list, str]:
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
