"""providers.checks against the fake upstream: real litellm calls, every auth method, every
error class, live listings that fail loudly."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from providers.checks import ConnectionSettings, list_models, test_connection, test_many
from providers.errors import ProviderError
from tests.conftest import CANARY, UPSTREAM_KEY

pytestmark = pytest.mark.django_db


def settings_for(upstream, **overrides):
    values = {"provider": "openai_compatible", "auth_method": "api_key",
              "base_url": upstream.openai_url, "config": {}, "secrets": {"api_key": UPSTREAM_KEY},
              "model": "test-model"}
    values.update(overrides)
    return ConnectionSettings(**values)


def test_api_key_call_succeeds_and_sends_the_key(upstream):
    outcome = test_connection(settings_for(upstream))
    assert outcome.ok, outcome.message
    assert outcome.latency_ms >= 0
    assert upstream.last_request.path == "/v1/chat/completions"
    assert upstream.last_request.body["max_tokens"] == 1
    assert upstream.last_request.key == UPSTREAM_KEY


def test_two_calls_in_a_row_work(upstream):
    assert test_connection(settings_for(upstream)).ok
    assert test_connection(settings_for(upstream)).ok


def test_anthropic_call_uses_x_api_key(upstream):
    outcome = test_connection(settings_for(upstream, provider="anthropic",
                                           base_url=upstream.anthropic_url,
                                           model="claude-haiku-4-5"))
    assert outcome.ok, outcome.message
    assert upstream.last_request.headers["x-api-key"] == UPSTREAM_KEY


def test_no_auth_call_works_against_an_open_server(upstream_factory):
    open_up = upstream_factory(api_keys=())
    outcome = test_connection(settings_for(open_up, provider="vllm", auth_method="none",
                                           secrets={}))
    assert outcome.ok, outcome.message


@pytest.mark.parametrize("header", ["X-Team-Key", "Authorization"])
def test_custom_header_is_sent(upstream, header):
    upstream.key_headers.add(header.lower())
    value = UPSTREAM_KEY if header != "Authorization" else f"Bearer {UPSTREAM_KEY}"
    outcome = test_connection(settings_for(upstream, auth_method="custom_header",
                                           config={"header_name": header},
                                           secrets={"header_value": value}))
    assert outcome.ok, outcome.message
    assert upstream.last_request.headers[header.lower()] == value


def test_litellm_proxy_key_goes_in_x_litellm_api_key(upstream):
    outcome = test_connection(settings_for(upstream, provider="litellm_proxy"))
    assert outcome.ok, outcome.message
    assert upstream.last_request.headers["x-litellm-api-key"] == UPSTREAM_KEY
    assert UPSTREAM_KEY not in upstream.last_request.headers.get("authorization", "")


def test_oauth_token_is_used_and_refreshed_after_401(upstream):
    cache.clear()
    s = settings_for(upstream, auth_method="oauth_client_credentials",
                     config={"token_url": upstream.token_url, "client_id": "test-client"},
                     secrets={"client_secret": "test-client-secret-0001"})
    assert test_connection(s).ok
    assert test_connection(s).ok
    assert upstream.tokens_issued == 1
    upstream.expire_tokens()  # the provider stops accepting the cached token
    assert test_connection(s).ok
    assert upstream.tokens_issued == 2


def test_embedding_model_is_tested_with_an_embedding_call(upstream):
    assert test_connection(settings_for(upstream, model="test-embedding")).ok
    assert upstream.last_request.path == "/v1/embeddings"


@pytest.mark.parametrize("mode,error_class", [
    (401, "auth"), (429, "rate_limited"), (500, "provider_error"), ("bad_json", "provider_error"),
    ("drop", "unreachable"), ("not_found", "model_not_found"),
    ("echo_key", "auth"),
])
def test_failures_map_to_error_classes_with_our_messages(upstream, mode, error_class):
    upstream.set_mode(mode)
    outcome = test_connection(settings_for(upstream))
    assert (outcome.ok, outcome.error_class) == (False, error_class)
    assert UPSTREAM_KEY not in outcome.message
    assert "Incorrect API key" not in outcome.message


def test_hang_is_a_timeout(upstream):
    upstream.set_mode("hang")
    outcome = test_connection(settings_for(upstream), timeout=1)
    assert outcome.error_class == "timeout"


def test_refused_port_is_unreachable(upstream, closed_port_url):
    outcome = test_connection(settings_for(upstream, base_url=closed_port_url))
    assert outcome.error_class == "unreachable"


def test_unknown_model_is_model_not_found(upstream):
    assert test_connection(settings_for(upstream, model="no-such-model")).error_class == \
        "model_not_found"


def test_wrong_key_is_auth(upstream):
    outcome = test_connection(settings_for(upstream, secrets={"api_key": CANARY}))
    assert outcome.error_class == "auth" and CANARY not in outcome.message


def test_blocked_by_egress_policy_never_reaches_the_upstream(upstream, settings):
    settings.LLMCONN_EGRESS_ALLOW = []
    outcome = test_connection(settings_for(upstream))
    assert outcome.error_class == "blocked"
    assert upstream.request_count == 0


def test_live_listing_returns_the_upstream_models(upstream):
    upstream.models = ["a-model", "b-model"]
    assert list_models(settings_for(upstream)) == ["a-model", "b-model"]
    s = settings_for(upstream, provider="anthropic", base_url=upstream.anthropic_url)
    assert list_models(s) == ["a-model", "b-model"]


def test_failed_listing_raises_instead_of_returning_nothing(upstream):
    upstream.set_mode(401)
    with pytest.raises(ProviderError) as err:
        list_models(settings_for(upstream))
    assert err.value.error_class == "auth"
    upstream.set_mode("bad_json")
    with pytest.raises(ProviderError) as err:
        list_models(settings_for(upstream))
    assert err.value.error_class == "provider_error"


def test_static_list_for_providers_without_listing():
    s = ConnectionSettings(provider="bedrock", auth_method="api_key", secrets={"api_key": "x"},
                           model="my-model")
    assert "my-model" in list_models(s) and "amazon.titan-embed-text-v2:0" in list_models(s)


def test_no_model_falls_back_to_a_listing(upstream):
    outcome = test_connection(settings_for(upstream, model=""))
    assert outcome.ok and "test-model" in outcome.models


def test_many_runs_concurrently_and_reports_each(upstream, closed_port_url):
    items = [(i, settings_for(upstream)) for i in range(10)]
    items.append(("down", settings_for(upstream, base_url=closed_port_url)))
    seen = []
    results = test_many(items, concurrency=4, on_result=lambda k, o: seen.append(k))
    assert sorted(map(str, seen)) == sorted(map(str, results))
    assert all(results[i].ok for i in range(10))
    assert results["down"].error_class == "unreachable"
