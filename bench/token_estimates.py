"""How far llmconn's token estimates (providers/tokens.py, litellm's token_counter) are from
other tokenizers' counts, for the README's "Usage" section and bench/RESULTS.md.

    LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 .venv/bin/python -m bench.token_estimates

For each sample (English prose, code, JSON tool arguments, German, Chinese, numbers) the
estimate llmconn records for a model litellm does not know (`openai/<a local model>`:
litellm's default, tiktoken cl100k_base) is compared with: GPT-4o's own tokenizer (o200k_base,
what OpenAI bills), Anthropic's legacy tokenizer shipped inside litellm (the only non-OpenAI
tokenizer available offline here), and the fake upstream's count (tests/upstream.py: 4
characters a token, the "known counts" the tests compare with). Prints a Markdown table.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLES = {
    "English prose": (
        "The committee met on Tuesday to review the quarterly results. Revenue grew by "
        "eight percent, driven mostly by the new subscription plans, while costs stayed flat. "
        "Several members asked whether the growth would hold through the winter months, and "
        "the finance lead promised a detailed forecast before the next meeting."),
    "Python code": (
        "def fibonacci(n: int) -> list[int]:\n    seq = [0, 1]\n    while len(seq) < n:\n"
        "        seq.append(seq[-1] + seq[-2])\n    return seq[:n]\n\n"
        "if __name__ == '__main__':\n    print(fibonacci(20))\n"),
    "JSON tool arguments": json.dumps({
        "city": "San Francisco", "unit": "celsius", "days": 5,
        "include": ["humidity", "wind_speed", "precipitation_probability"]}),
    "German prose": (
        "Die Bundesregierung hat am Mittwoch einen Gesetzentwurf zur Digitalisierung der "
        "Verwaltung beschlossen. Bürgerinnen und Bürger sollen künftig die meisten Anträge "
        "online stellen können, ohne ein Amt aufsuchen zu müssen."),
    "Chinese prose": (
        "今天天气很好，我们决定去公园散步。公园里有很多人在锻炼身体，还有孩子们在草地上玩耍。"
        "我们在湖边坐了一会儿，看着水面上的鸭子游来游去。"),
    "Numbers and IDs": (
        "Order 48213-AX shipped 2026-11-30 14:05 UTC; items: 3x SKU-99812 at 12.49, "
        "1x SKU-10023 at 199.00; tracking 1Z999AA10123456784; total 236.47 EUR."),
}


def main() -> None:
    import litellm
    import tiktoken
    from tokenizers import Tokenizer

    from providers import tokens

    # The encodings litellm ships (cl100k, o200k, p50k): read from there, never downloaded.
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(
        os.path.dirname(litellm.__file__), "litellm_core_utils", "tokenizers"))
    try:
        o200k = tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - not shipped: compare with what is there
        o200k = None
    anthropic_path = os.path.join(os.path.dirname(litellm.__file__), "litellm_core_utils",
                                  "tokenizers", "anthropic_tokenizer.json")
    claude = Tokenizer.from_file(anthropic_path)

    rows = []
    for name, text in SAMPLES.items():
        estimate = tokens.count_output(model="openai/llama-3.2-3b-instruct", text=text)
        gpt4o = len(o200k.encode(text)) if o200k else 0
        claude_legacy = len(claude.encode(text).ids)
        fake = max(1, len(text) // 4)
        rows.append((name, len(text), estimate, gpt4o, claude_legacy, fake))

    def off(estimate: int, other: int) -> str:
        return f"{(estimate - other) / other:+.0%}" if other else "n/a"

    print("| sample | chars | llmconn estimate | GPT-4o (o200k) | Anthropic legacy | "
          "fake upstream (chars/4) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, chars, est, gpt4o, claude_legacy, fake in rows:
        print(f"| {name} | {chars} | {est} | {gpt4o} ({off(est, gpt4o)}) | {claude_legacy} "
              f"({off(est, claude_legacy)}) | {fake} ({off(est, fake)}) |")
    # the same estimate for models litellm knows
    for model in ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "gemini/gemini-2.0-flash"):
        counts = [tokens.count_output(model=model, text=t) for t in SAMPLES.values()]
        print(f"\n{model}: {counts}")


if __name__ == "__main__":
    main()
