"""Conformance of the /v1 gateway to OpenAI's published API (#15).

OpenAI's spec (openai/openai-openapi, MIT) is read from ../shared/openai-openapi.json relative
to the repository root, where CI lays it; the module skips with a message saying so if it is
missing. Answers are checked with jsonschema against the spec's own schemas, for each provider
wire: OpenAI-compatible (forwarded directly), Anthropic and Gemini (translated by litellm),
all against the fake upstream (tests/upstream.py). Requests: every property of
CreateChatCompletionRequest and CreateEmbeddingRequest, with a value the spec accepts, must
reach an OpenAI-wire upstream unchanged.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
from functools import lru_cache
from pathlib import Path

import pytest

from providers.fields import OPENAI_CHAT_FIELDS, OPENAI_EMBEDDING_FIELDS

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT.parent / "shared" / "openai-openapi.json"
CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
HELLO = [{"role": "user", "content": "Hello"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
GEMINI_MODELS = ("gemini-2.0-flash", "text-embedding-004")


def _nullable(node):
    """OpenAPI 3.0's `nullable: true` (still used in places in this 3.1 file) as JSON Schema:
    `anyOf [schema, null]`; jsonschema ignores the keyword otherwise."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@lru_cache(maxsize=1)
def _spec():
    if not SPEC_PATH.exists():
        return None
    return _nullable(json.loads(SPEC_PATH.read_text()))


@pytest.fixture(scope="module")
def spec():
    found = _spec()
    if found is None:
        pytest.skip(f"OpenAI's spec is not at {SPEC_PATH}: CI lays it in ../shared next to the "
                    "repository (copy openai-openapi.json from openai/openai-openapi there).")
    return found


@lru_cache(maxsize=64)
def _validator(name: str):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai-openapi", resource)
    return Draft202012Validator({"$ref": f"urn:openai-openapi#/components/schemas/{name}"},
                                registry=registry)


def check(spec, name: str, instance) -> None:
    """Fail with every schema error of `instance` against the spec's schema `name`."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5])


def spec_properties(spec, name: str) -> dict:
    schema = spec["components"]["schemas"][name]
    out = {}
    for part in schema.get("allOf", [schema]):
        if "$ref" in part:
            out.update(spec_properties(spec, part["$ref"].rsplit("/", 1)[-1]))
        else:
            out.update(part.get("properties") or {})
    return out


# --- the three wires ------------------------------------------------------------------------------

@pytest.fixture(params=["openai", "anthropic", "gemini"])
def wire(request, upstream_factory, make_connection, make_workspace, make_key):
    """(name, upstream, API key) of a workspace whose chat (and, where the provider has them,
    embedding) role is on a connection of that wire."""
    from tests.conftest import UPSTREAM_KEY
    from tests.upstream import DEFAULT_MODELS

    up = upstream_factory(name=f"up-{request.param}", api_keys={UPSTREAM_KEY},
                          models=[*DEFAULT_MODELS, *GEMINI_MODELS])
    if request.param == "openai":
        conn = make_connection(up, name="openai-wire")
        ws = make_workspace("Wire", chat=conn, embedding=(conn, "test-embedding"))
    elif request.param == "anthropic":
        ws = make_workspace("Wire", chat=make_connection(up, anthropic=True, name="claude"))
    else:
        conn = make_connection(up, name="gemini", provider="gemini", base_url=up.gemini_url,
                               default_model="gemini-2.0-flash")
        ws = make_workspace("Wire", chat=conn, embedding=(conn, "text-embedding-004"))
    return request.param, up, make_key(ws)


def test_chat_answers_validate(spec, gateway, wire):
    name, up, key = wire
    for extra in ({}, {"tools": TOOLS}):
        response = gateway.post(CHAT, key, {"model": "chat", "messages": HELLO, **extra})
        assert response.status_code == 200, response.content
        check(spec, "CreateChatCompletionResponse", response.json())


def test_every_stream_chunk_validates(spec, gateway, wire):
    name, up, key = wire
    for extra in ({}, {"stream_options": {"include_usage": True}}, {"tools": TOOLS}):
        response, events = gateway.stream(CHAT, key, {"model": "chat", "messages": HELLO,
                                                      "stream": True, **extra})
        assert response.status_code == 200
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks
        for chunk in chunks:
            check(spec, "CreateChatCompletionStreamResponse", chunk)
        if extra.get("stream_options"):
            assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_embeddings_validate_as_floats_and_base64(spec, gateway, wire):
    name, up, key = wire
    if name == "anthropic":
        pytest.skip("Anthropic has no embeddings endpoint")
    floats = gateway.post(EMBED, key, {"model": "embedding", "input": ["a", "b"]})
    assert floats.status_code == 200, floats.content
    check(spec, "CreateEmbeddingResponse", floats.json())
    encoded = gateway.post(EMBED, key, {"model": "embedding", "input": ["a", "b"],
                                        "encoding_format": "base64"})
    assert encoded.status_code == 200, encoded.content
    # The spec types `embedding` as numbers only (its base64 variant is a string of float32
    # little-endian, as the SDKs decode it): check the decoded answer.
    decoded = encoded.json()
    for as_float, as_b64 in zip(floats.json()["data"], decoded["data"], strict=True):
        raw = base64.b64decode(as_b64["embedding"], validate=True)
        as_b64["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert as_b64["embedding"] == pytest.approx(as_float["embedding"], abs=1e-4)
    check(spec, "CreateEmbeddingResponse", decoded)


def test_models_validate(spec, gateway, wire):
    _, _, key = wire
    listing = gateway.get("/v1/models", key).json()
    check(spec, "ListModelsResponse", listing)
    one = gateway.get(f"/v1/models/{listing['data'][0]['id']}", key).json()
    check(spec, "Model", one)


def test_errors_validate(spec, gateway, wire):
    name, up, key = wire
    answers = [
        gateway.post(CHAT, None, {"model": "chat", "messages": HELLO}),
        gateway.post(CHAT, key, {"model": "nope", "messages": HELLO}),
        gateway.post(CHAT, key, {"model": "chat", "messages": HELLO, "api_base": "x"}),
        gateway.post(CHAT, key, {"model": "chat"}),
        gateway.get("/v1/models/nope", key),
        gateway.get("/v1/nowhere", key),
    ]
    provider = []
    for mode, status in ((429, None), ("status", 400), (401, None)):
        up.set_mode(mode, status=status)
        provider.append(gateway.post(CHAT, key, {"model": "chat", "messages": HELLO}))
    up.set_mode("ok")
    assert [r.status_code for r in provider] == [429, 400, 502]
    if name != "openai":  # litellm would drop it: refused, naming it
        answers.append(gateway.post(CHAT, key, {"model": "chat", "messages": HELLO,
                                                "logit_bias": {"1": 1}}))
    for response in answers + provider:
        assert response.status_code >= 400, response.content
        check(spec, "ErrorResponse", response.json())


# --- requests: every property reaches an OpenAI-wire upstream unchanged -------------------------

CHAT_REQUEST = {
    "model": "chat",
    "messages": [{"role": "developer", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    "audio": {"voice": "alloy", "format": "wav"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "lookup", "parameters": {"type": "object", "properties": {}}}],
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "max_completion_tokens": 64,
    "max_tokens": 64,
    "metadata": {"team": "search"},
    "modalities": ["text"],
    "moderation": {"model": "omni-moderation-latest"},
    "n": 1,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "Hello"},
    "presence_penalty": -0.5,
    "prompt_cache_key": "conversation-42",
    "prompt_cache_options": {},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                   "required": ["a"], "additionalProperties": False}}},
    "safety_identifier": "user-hash-1234",
    "seed": 42,
    "service_tier": "auto",
    "stop": ["END"],
    "store": True,
    "stream": False,
    "stream_options": {"include_usage": True},
    "temperature": 0.7,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "tools": TOOLS,
    "top_logprobs": 2,
    "top_p": 0.9,
    "user": "user-1234",
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}
EMBEDDING_REQUEST = {"model": "embedding", "input": ["a", "b"], "dimensions": 8,
                     "encoding_format": "float", "user": "user-1234"}


@pytest.fixture
def openai_wire(upstream, make_connection, make_workspace, make_key):
    conn = make_connection(upstream, name="openai-wire")
    return make_key(make_workspace("Req", chat=conn, embedding=(conn, "test-embedding")))


def test_request_examples_cover_every_spec_property_and_are_valid(spec):
    assert set(CHAT_REQUEST) == set(spec_properties(spec, "CreateChatCompletionRequest"))
    assert set(EMBEDDING_REQUEST) == set(spec_properties(spec, "CreateEmbeddingRequest"))
    check(spec, "CreateChatCompletionRequest", CHAT_REQUEST)
    check(spec, "CreateEmbeddingRequest", EMBEDDING_REQUEST)
    # providers.fields keeps the same lists for the litellm paths
    assert OPENAI_CHAT_FIELDS == set(CHAT_REQUEST)
    assert OPENAI_EMBEDDING_FIELDS == set(EMBEDDING_REQUEST)


def test_every_chat_property_reaches_the_upstream_unchanged(spec, gateway, upstream,
                                                            openai_wire):
    body = copy.deepcopy(CHAT_REQUEST)
    response = gateway.post(CHAT, openai_wire, body)
    assert response.status_code == 200, response.content
    sent = upstream.last_request.body
    for name, value in CHAT_REQUEST.items():
        if name == "model":
            assert sent["model"] == "test-model"  # the role resolved to the bound model
        else:
            assert sent[name] == value, name
    assert set(sent) == set(CHAT_REQUEST)


def test_every_streamed_chat_property_reaches_the_upstream(spec, gateway, upstream, openai_wire):
    body = dict(copy.deepcopy(CHAT_REQUEST), stream=True)
    response, events = gateway.stream(CHAT, openai_wire, body)
    assert response.status_code == 200
    sent = upstream.last_request.body
    for name, value in body.items():
        if name not in ("model",):
            assert sent[name] == value, name


def test_every_embedding_property_reaches_the_upstream_unchanged(spec, gateway, upstream,
                                                                 openai_wire):
    for fmt in ("float", "base64"):
        body = dict(EMBEDDING_REQUEST, encoding_format=fmt)
        response = gateway.post(EMBED, openai_wire, body)
        assert response.status_code == 200, response.content
        if fmt == "float":
            check(spec, "CreateEmbeddingResponse", response.json())
        sent = upstream.last_request.body
        assert {k: v for k, v in sent.items() if k != "model"} == \
            {k: v for k, v in body.items() if k != "model"}
