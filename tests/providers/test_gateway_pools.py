"""The direct gateway's connection pools: sequential calls share one pool, concurrent calls
spread over several (httpcore's pool costs grow with its size), every call answered."""

from __future__ import annotations

import asyncio

from providers import gateway
from tests.conftest import UPSTREAM_KEY

HELLO = [{"role": "user", "content": "Hello"}]


def _call(base_url: str) -> dict:
    return {"model": "openai/test-model", "api_base": base_url, "api_key": UPSTREAM_KEY}


def test_concurrent_calls_spread_over_pools_and_all_answer(upstream):
    call = _call(upstream.openai_url)

    async def run():
        answers = await asyncio.gather(*[
            gateway.chat(call=call, params={"messages": HELLO}, label="t") for _ in range(20)])
        return answers, len(gateway._CLIENTS[asyncio.get_running_loop()])

    answers, pools = asyncio.run(run())
    assert all(a["choices"][0]["message"]["content"] == "Hello from upstream." for a in answers)
    assert 1 < pools <= gateway.SHARDS


def test_sequential_calls_use_the_first_pool_only(upstream):
    call = _call(upstream.openai_url)

    async def run():
        for _ in range(5):
            await gateway.chat(call=call, params={"messages": HELLO}, label="t")
        return len(gateway._CLIENTS[asyncio.get_running_loop()])

    assert asyncio.run(run()) == 1
