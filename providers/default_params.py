"""Default request parameters a connection or a binding adds to every chat call.

`default_params` is an object of OpenAI chat request fields (`temperature`, `top_p`,
`max_tokens`, `max_completion_tokens`, `stop`, `seed`, ...). A call's parameters are merged
connection < binding < request: the binding's override the connection's, the request's
override both (`merge_params`). Only fields that shape the answer are allowed: nothing that
would redirect a call or change its credentials, and not `model`, `messages` or `stream`.
"""

from __future__ import annotations

import json

_NUMBER = (int, float)
# name -> accepted JSON types
ALLOWED: dict[str, tuple[type, ...]] = {
    "temperature": _NUMBER, "top_p": _NUMBER, "max_tokens": (int,),
    "max_completion_tokens": (int,), "stop": (str, list), "seed": (int,),
    "presence_penalty": _NUMBER, "frequency_penalty": _NUMBER, "n": (int,),
    "logit_bias": (dict,), "logprobs": (bool,), "top_logprobs": (int,), "user": (str,),
    "response_format": (dict,), "reasoning_effort": (str,), "parallel_tool_calls": (bool,),
    "service_tier": (str,), "verbosity": (str,), "top_k": (int,), "min_p": _NUMBER,
    "repetition_penalty": _NUMBER, "chat_template_kwargs": (dict,), "reasoning": (dict,),
    "keep_alive": (str, int),
}
MAX_BYTES = 16_384


def clean_default_params(value, *, where: str = "default_params") -> dict:
    """The checked `default_params` object; ValueError with a sentence naming the field."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object of request fields, e.g. "
                         '{"temperature": 0.2, "max_tokens": 512}.')
    unknown = sorted(k for k in value if k not in ALLOWED)
    if unknown:
        raise ValueError(f"{where}: {', '.join(map(str, unknown))} cannot be a default "
                         f"parameter (allowed: {', '.join(sorted(ALLOWED))}).")
    for name, item in value.items():
        kinds = ALLOWED[name]
        if item is None:
            continue
        if isinstance(item, bool) and bool not in kinds:
            raise ValueError(f"{where}.{name} has the wrong type.")
        if not isinstance(item, kinds):
            raise ValueError(f"{where}.{name} has the wrong type.")
    if len(json.dumps(value)) > MAX_BYTES:
        raise ValueError(f"{where} is too large ({MAX_BYTES} bytes at most).")
    return {k: v for k, v in value.items() if v is not None}


def merge_params(*layers: dict | None) -> dict:
    """Later layers override earlier ones (connection, binding, request)."""
    merged: dict = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return merged
