"""Which request fields a provider reached through litellm can take (the gateway's litellm path).

OpenAI-wire providers get the client's body as it was sent (providers.forward, direct path).
For the others litellm translates, and a field it does not map must not vanish: litellm reads
some keyword arguments itself (`metadata`, `num_retries`, `input_cost_per_token`, ...; its
`all_litellm_params`) and would drop them before the provider sees anything. So, per field:

- an OpenAI parameter litellm maps for this provider (`get_supported_openai_params`): sent;
- an OpenAI parameter it does not map, or a name litellm keeps for itself: refused with 400
  naming the field and the provider (`unsupported_parameter`);
- anything else is a provider extension (Anthropic's `top_k` or `thinking`, Gemini's
  `safety_settings`): litellm passes such keywords on to the provider's request body, and the
  provider answers for them (its own 400 comes back with its message).
"""

from __future__ import annotations

import functools

# The properties of CreateChatCompletionRequest / CreateEmbeddingRequest in OpenAI's published
# spec (tests/workspaces/test_conformance.py checks these lists against the spec file).
OPENAI_CHAT_FIELDS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
    "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
})
OPENAI_EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})

# Fields the gateway itself sends on every litellm call (never refused).
_ALWAYS = frozenset({"model", "messages", "input", "stream", "stream_options",
                     "encoding_format"})


@functools.lru_cache(maxsize=512)
def _supported(model: str, endpoint: str) -> tuple[frozenset[str], str]:
    """(OpenAI params litellm maps for `model`, litellm's provider name)."""
    from .forward import _litellm

    litellm = _litellm()
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:  # noqa: BLE001 - unknown to litellm: it will say so when called
        return frozenset(), ""
    try:
        params = litellm.get_supported_openai_params(
            model=model.split("/", 1)[-1], custom_llm_provider=provider,
            request_type="embeddings" if endpoint == "embeddings" else "chat_completion")
    except Exception:  # noqa: BLE001
        params = None
    return frozenset(params or ()), provider


@functools.lru_cache(maxsize=1)
def _litellm_own() -> frozenset[str]:
    """Keyword arguments litellm reads itself instead of sending them to the provider."""
    import inspect

    from .forward import _litellm

    litellm = _litellm()
    from litellm.types.utils import all_litellm_params

    own = set(all_litellm_params)
    for fn in (litellm.completion, litellm.embedding):
        own |= {n for n, p in inspect.signature(fn).parameters.items()
                if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return frozenset(own)


def unsupported(*, model: str, params: dict, endpoint: str = "chat") -> list[str]:
    """The fields of `params` that litellm would not send to the provider of `model` (a litellm
    model string such as `anthropic/claude-haiku-4-5`), sorted."""
    supported, _ = _supported(model, endpoint)
    openai_fields = OPENAI_EMBEDDING_FIELDS if endpoint == "embeddings" else OPENAI_CHAT_FIELDS
    own = _litellm_own()
    refused = []
    for name in params:
        if name in _ALWAYS or name in supported:
            continue
        if name in openai_fields or name in own:
            refused.append(name)
    return sorted(refused)
