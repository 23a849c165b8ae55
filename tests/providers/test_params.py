"""providers.params: a connection's settings as litellm kwargs, per provider and auth method."""

from __future__ import annotations

import pytest

from providers.errors import ProviderError
from providers.params import NO_KEY, litellm_kwargs, redacted, secret_values
from tests.conftest import CANARY
from tests.factories import VERTEX_KEY_JSON


def kw(**overrides):
    args = {"provider": "openai_compatible", "auth_method": "api_key",
            "base_url": "http://127.0.0.1:1/v1/", "config": {}, "secrets": {"api_key": CANARY},
            "model": "test-model"}
    args.update(overrides)
    return litellm_kwargs(**args)


def test_api_key_goes_in_api_key_with_the_provider_prefix():
    assert kw() == {"model": "openai/test-model", "api_base": "http://127.0.0.1:1/v1",
                    "api_key": CANARY}


def test_default_base_url_is_used_for_openai_wire_providers():
    out = kw(provider="ollama", auth_method="none", base_url=None, secrets={})
    assert out["api_base"] == "http://localhost:11434/v1"
    assert out["api_key"] == NO_KEY


def test_litellm_proxy_key_travels_in_its_own_header():
    out = kw(provider="litellm_proxy")
    assert out["extra_headers"] == {"x-litellm-api-key": CANARY}
    assert out["api_key"] == NO_KEY
    assert out["model"] == "litellm_proxy/test-model"


def test_custom_header_becomes_an_extra_header():
    out = kw(auth_method="custom_header", config={"header_name": "X-Team-Key"},
             secrets={"header_value": CANARY})
    assert out["extra_headers"] == {"X-Team-Key": CANARY}


def test_azure_gets_api_version_default():
    out = kw(provider="azure_openai", base_url="https://x.openai.azure.com", model="dep")
    assert out["model"] == "azure/dep"
    assert out["api_version"] == "2024-10-21"


def test_bedrock_and_vertex_arguments():
    out = kw(provider="bedrock", auth_method="aws_access_key", base_url=None,
             config={"aws_access_key_id": "AKIA1"}, secrets={"aws_secret_access_key": CANARY},
             model="amazon.titan")
    assert out["aws_region_name"] == "us-east-1" and out["aws_secret_access_key"] == CANARY
    assert "api_base" not in out
    out = kw(provider="vertex_ai", auth_method="service_account", base_url=None,
             config={"project_id": "p"}, secrets={"service_account_json": VERTEX_KEY_JSON},
             model="g")
    assert out["vertex_project"] == "p" and out["vertex_location"] == "us-central1"


def test_missing_secret_is_an_auth_error():
    with pytest.raises(ProviderError) as err:
        kw(secrets={})
    assert err.value.error_class == "auth"


def test_unreadable_secrets_are_an_auth_error():
    from connections.fields import UNREADABLE

    with pytest.raises(ProviderError) as err:
        kw(secrets=UNREADABLE)
    assert err.value.error_class == "auth"


def test_missing_model_is_a_bad_request():
    with pytest.raises(ProviderError) as err:
        kw(model="")
    assert err.value.error_class == "bad_request"


def test_redacted_and_secret_values_cover_every_secret():
    out = kw(provider="litellm_proxy")
    assert CANARY not in repr(redacted(out))
    assert secret_values(out) == [CANARY]


@pytest.mark.django_db
def test_oauth_token_is_fetched_cached_and_sent_as_bearer(upstream):
    from django.core.cache import cache

    cache.clear()
    args = dict(auth_method="oauth_client_credentials",
                config={"token_url": upstream.token_url, "client_id": "test-client"},
                secrets={"client_secret": "test-client-secret-0001"})
    first = kw(**args)
    second = kw(**args)
    assert first["api_key"].startswith("tok-") and first["api_key"] == second["api_key"]
    assert upstream.tokens_issued == 1
    from providers.oauth import cache_key

    key = cache_key(token_url=upstream.token_url, client_id="test-client",
                    client_secret="test-client-secret-0001")
    assert first["api_key"] not in cache.get(key)
