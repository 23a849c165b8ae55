"""Token counts for calls whose provider did not report usage (llama.cpp's server and other
self-hosted servers ignore `stream_options.include_usage`).

litellm's `token_counter` counts with the model's tokenizer where litellm knows it (OpenAI's
tiktoken encodings, some Hugging Face tokenizers) and with tiktoken's cl100k_base otherwise
(its documented default); how far that can be from a provider's own count is measured in
bench/RESULTS.md ("Token estimates") and summarised in README "Usage". Images count as
litellm's default image size: never fetched (`use_default_image_token_count`), so counting
sends nothing anywhere. Counting runs in a thread (a tokenizer's first load takes ~1 s).
"""

from __future__ import annotations

import asyncio
import json
import logging

logger = logging.getLogger(__name__)


def _fallback(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def count_input(*, model: str, messages: list | None, tools: list | None = None) -> int:
    """Tokens of a chat request's messages (and tool definitions)."""
    if not messages:
        return 0
    from .forward import _litellm

    try:
        return int(_litellm().token_counter(model=model, messages=messages, tools=tools or None,
                                            use_default_image_token_count=True))
    except Exception as exc:  # noqa: BLE001 - a shape the counter does not know: approximate
        logger.info("token_counter failed for %s (%s): counting 4 characters a token.", model,
                    type(exc).__name__)
        return _fallback(json.dumps(messages, default=str))


def count_output(*, model: str, text: str) -> int:
    """Tokens of generated text (content, reasoning, tool-call names and arguments)."""
    if not text:
        return 0
    from .forward import _litellm

    try:
        return int(_litellm().token_counter(model=model, text=text, count_response_tokens=True))
    except Exception as exc:  # noqa: BLE001
        logger.info("token_counter failed for %s (%s): counting 4 characters a token.", model,
                    type(exc).__name__)
        return _fallback(text)


def estimate(*, model: str, messages: list | None, output_text: str,
             tools: list | None = None) -> tuple[int, int]:
    """(input tokens, output tokens) of a call, counted by litellm's token counter."""
    return (count_input(model=model, messages=messages, tools=tools),
            count_output(model=model, text=output_text))


async def aestimate(*, model: str, messages: list | None, output_text: str,
                    tools: list | None = None) -> tuple[int, int]:
    """`estimate` in a thread (tokenizers are CPU work and load lazily)."""
    return await asyncio.to_thread(estimate, model=model, messages=messages,
                                   output_text=output_text, tools=tools)


class Generated:
    """What a streamed answer generated so far, to count it when the provider does not: text
    and reasoning deltas, tool-call names and arguments, from OpenAI-shaped chunk dicts."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts: list[str] = []

    def add(self, chunk: dict) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for key in ("content", "reasoning_content", "reasoning", "refusal"):
                value = delta.get(key)
                if isinstance(value, str) and value:
                    self.parts.append(value)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    for key in ("name", "arguments"):
                        value = function.get(key)
                        if isinstance(value, str) and value:
                            self.parts.append(value)

    @property
    def text(self) -> str:
        return "".join(self.parts)
