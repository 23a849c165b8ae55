"""xAI, added as one class (providers/catalog.py `XAI`, an OpenAIWireProvider): listed by the
catalog API, tested, listed live and served on /v1 against the fake upstream, as any
OpenAI-wire provider is."""

from __future__ import annotations

import pytest

from connections import diagnostics
from providers.checks import ConnectionSettings, list_models
from providers.forward import direct_target
from providers.params import litellm_kwargs
from tests.conftest import UPSTREAM_KEY
from workspaces.models import UsageRecord

pytestmark = pytest.mark.django_db
MODEL = "grok-code-fast-1"  # in litellm's price table as xai/grok-code-fast-1


@pytest.fixture
def xai(upstream, make_connection):
    upstream.models.append(MODEL)
    return make_connection(upstream, name="grok", provider="xai", default_model=MODEL)


def test_xai_is_in_the_catalog_api(user_client):
    names = [p["name"] for p in user_client.get("/api/v1/providers/").json()]
    assert "xai" in names
    body = user_client.get("/api/v1/providers/xai/").json()
    assert (body["label"], body["litellm_prefix"], body["default_base_url"], body["wire"]) == (
        "xAI (Grok)", "xai", "https://api.x.ai/v1", "openai")
    assert [m["name"] for m in body["auth_methods"]] == ["api_key"]
    assert body["base_url_required"] is False


def test_xai_calls_go_to_api_x_ai_with_the_key_as_bearer():
    call = litellm_kwargs(provider="xai", auth_method="api_key", base_url=None, config={},
                          secrets={"api_key": "xai-test"}, model=MODEL)
    assert call == {"model": f"xai/{MODEL}", "api_base": "https://api.x.ai/v1",
                    "api_key": "xai-test"}
    assert direct_target(call) == ("https://api.x.ai/v1", MODEL,
                                   {"authorization": "Bearer xai-test"})


def test_an_xai_connection_tests_ok_against_the_upstream(upstream, xai):
    test = diagnostics.connection_test_request(connection=xai)
    diagnostics.connection_test_run(test_id=test.pk)
    test.refresh_from_db()
    assert test.status == "succeeded", test.message
    sent = upstream.last_request
    assert (sent.path, sent.key, sent.body["model"]) == ("/v1/chat/completions", UPSTREAM_KEY,
                                                         MODEL)
    s = ConnectionSettings(provider="xai", auth_method="api_key", base_url=upstream.openai_url,
                           secrets={"api_key": UPSTREAM_KEY})
    assert MODEL in list_models(s, timeout=5)


def test_an_xai_connection_serves_v1_chat(gateway, upstream, xai, make_workspace, make_key):
    key = make_key(make_workspace("Grok", chat=xai))
    response = gateway.post("/v1/chat/completions", key,
                            {"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello from upstream."
    assert response["x-llmconn-connection"] == "grok"
    assert (upstream.last_request.key, upstream.last_request.body["model"]) == (UPSTREAM_KEY,
                                                                                MODEL)
    record = UsageRecord.objects.get()
    assert (record.model, record.status_code) == (MODEL, 200)
    assert record.cost is not None and record.cost > 0  # priced as xai/grok-code-fast-1


def test_an_xai_model_string_from_another_tool_is_recognised():
    """OpenHands' LLM_MODEL / per-user llm_model: `xai/...` names the catalog's provider,
    with no edit of the env import (an OpenAI-wire provider with its own litellm prefix)."""
    from connections.env_import import split_litellm_model

    assert split_litellm_model("xai/grok-4.3") == ("xai", "grok-4.3")
    assert split_litellm_model("openai/gpt-4o", base_url="http://h/v1") == (
        "openai_compatible", "gpt-4o")
