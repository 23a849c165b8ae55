"""providers.forward: OpenAI-wire providers are called directly (no litellm), over
providers.transport's keep-alive pool (one aiohttp session per event loop); prices come from
litellm's table file."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers import forward, transport
from providers.errors import ProviderError
from providers.forward import direct_target
from providers.params import NO_KEY, litellm_kwargs
from tests.conftest import UPSTREAM_KEY

HELLO = [{"role": "user", "content": "Hello"}]


def _call(provider="openai_compatible", auth_method="api_key", base_url="http://127.0.0.1:9/v1",
          config=None, secrets=None, model="test-model"):
    return litellm_kwargs(provider=provider, auth_method=auth_method, base_url=base_url,
                          config=config or {}, secrets=secrets if secrets is not None else
                          {"api_key": UPSTREAM_KEY}, model=model)


def test_openai_wire_call_is_forwarded_directly_with_the_plain_model_name():
    base, model, headers = direct_target(_call(provider="openrouter", base_url=None,
                                               model="openai/gpt-4o-mini"))
    assert base == "https://openrouter.ai/api/v1"
    assert model == "openai/gpt-4o-mini"  # the provider prefix only is removed
    assert headers == {"authorization": f"Bearer {UPSTREAM_KEY}"}


@pytest.mark.parametrize("provider,base_url", [
    ("anthropic", "http://127.0.0.1:9/anthropic"),
    ("azure_openai", "https://x.openai.azure.com"),
])
def test_other_wire_formats_go_through_litellm(provider, base_url):
    config = {"api_version": "2024-10-21"} if provider == "azure_openai" else {}
    assert direct_target(_call(provider=provider, base_url=base_url, config=config)) is None


def test_no_placeholder_key_is_sent_and_a_custom_header_replaces_authorization():
    _, _, headers = direct_target(_call(auth_method="none", secrets={}))
    assert headers == {}
    call = _call(auth_method="custom_header", config={"header_name": "Authorization"},
                 secrets={"header_value": "Token abc"})
    assert call["api_key"] == NO_KEY
    assert direct_target(call)[2] == {"authorization": "Token abc"}


def test_litellm_proxy_key_travels_in_its_own_header():
    _, _, headers = direct_target(_call(provider="litellm_proxy"))
    assert headers == {"x-litellm-api-key": UPSTREAM_KEY}


def _idle():
    """The protocols of the idle keep-alive connections of this loop's session."""
    conns = transport.session().connector._conns
    return [proto for idle in conns.values() for proto, _ in idle]


def test_direct_chat_reaches_the_upstream_and_reuses_one_kept_alive_connection(upstream):
    call = _call(base_url=upstream.openai_url)

    async def two_calls():
        first = await forward.chat(call=call, params={"messages": HELLO}, label="t")
        idle = _idle()
        second = await forward.chat(call=call, params={"messages": HELLO}, label="t")
        return first, second, idle, _idle()

    first, second, idle, again = asyncio.run(two_calls())
    assert first["choices"][0]["message"]["content"] == "Hello from upstream."
    assert second["usage"]["completion_tokens"] > 0
    assert len(idle) == 1 and again == idle  # the same connection served both calls
    sent = upstream.last_request
    assert sent.key == UPSTREAM_KEY and sent.body["model"] == "test-model"
    assert "stream" not in sent.body


def test_direct_stream_asks_for_usage_and_yields_chunks(upstream):
    call = _call(base_url=upstream.openai_url)

    async def run():
        chunks = await forward.chat_stream(call=call, params={"messages": HELLO}, label="t")
        return [c async for c in chunks]

    chunks = asyncio.run(run())
    assert upstream.last_request.body["stream_options"] == {"include_usage": True}
    assert "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks if c["choices"]) == "Hello from upstream."
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("mode,status,code", [
    (401, 502, "provider_auth_failed"),
    (429, 429, "rate_limit_exceeded"),  # the provider's own code (CONTRACT.md)
    (500, 502, "server_error"),
    ("bad_json", 502, "provider_error"),
])
def test_direct_call_failures_are_classified_without_upstream_text(upstream, mode, status, code):
    upstream.set_mode(mode)
    call = _call(base_url=upstream.openai_url)
    with pytest.raises(ProviderError) as caught:
        asyncio.run(forward.chat(call=call, params={"messages": HELLO}, label="t"))
    assert (caught.value.status, caught.value.code) == (status, code)
    if mode == 429:
        assert caught.value.retry_after == "1"


def test_a_broken_chunk_mid_stream_raises_from_the_iterator(upstream):
    upstream.set_mode("bad_json")
    call = _call(base_url=upstream.openai_url)

    async def run():
        chunks = await forward.chat_stream(call=call, params={"messages": HELLO}, label="t")
        return [c async for c in chunks]

    with pytest.raises(ProviderError) as caught:
        asyncio.run(run())
    assert caught.value.error_class == "provider_error"


def test_direct_embeddings(upstream):
    call = _call(base_url=upstream.openai_url, model="test-embedding")
    out = asyncio.run(forward.embed(call=call, params={"input": ["a", "b"]}, label="t"))
    assert len(out["data"]) == 2
    assert "encoding_format" not in upstream.last_request.body  # forwarded as sent


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "deepseek/deepseek-chat",
                                   "openai/gpt-4o", "anthropic/claude-haiku-4-5",
                                   "mistral/mistral-large-latest"])
def test_cost_from_the_price_table_matches_litellm(model):
    import litellm

    prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=1000,
                                                completion_tokens=500)
    assert float(forward.cost(model=model, input_tokens=1000, output_tokens=500)) == \
        pytest.approx(prompt + completion, rel=1e-9)


def test_cost_of_an_unknown_model_is_none():
    assert forward.cost(model="openai/test-model", input_tokens=10, output_tokens=5) is None
    assert forward.cost(model="hosted_vllm/whatever", input_tokens=10) is None


def test_concurrent_calls_all_answer_and_their_connections_are_kept(upstream):
    call = _call(base_url=upstream.openai_url)

    async def run():
        answers = await asyncio.gather(*[
            forward.chat(call=call, params={"messages": HELLO}, label="t") for _ in range(20)])
        return answers, _idle()

    answers, idle = asyncio.run(run())
    assert all(a["choices"][0]["message"]["content"] == "Hello from upstream." for a in answers)
    assert 1 <= len(idle) <= 20 and all(c.is_connected() for c in idle)


def test_an_answer_past_the_size_cap_is_refused(upstream, monkeypatch):
    monkeypatch.setattr(forward, "MAX_RESPONSE_BYTES", 100)
    with pytest.raises(ProviderError) as caught:
        asyncio.run(forward.chat(call=_call(base_url=upstream.openai_url),
                                 params={"messages": HELLO}, label="t"))
    assert caught.value.code == "provider_response_too_large"


def test_an_answer_that_never_ends_is_cut_at_the_deadline(upstream):
    upstream.set_mode("endless", delay_ms=50)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        asyncio.run(forward.chat(call=_call(base_url=upstream.openai_url),
                                 params={"messages": HELLO}, label="t", timeout=0.6))
    assert (caught.value.status, caught.value.error_class) == (504, "timeout")
    assert time.monotonic() - started < 5  # trickling bytes did not reset the deadline
