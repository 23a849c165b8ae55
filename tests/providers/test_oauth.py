"""providers.oauth: client-credentials tokens, cached until shortly before expiry."""

from __future__ import annotations

import asyncio

import pytest
from django.core.cache import cache

from providers import oauth
from providers.errors import ProviderError

SECRET = "test-client-secret-0001"


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def args(upstream, **extra):
    return {"token_url": upstream.token_url, "client_id": "test-client", "client_secret": SECRET,
            **extra}


def test_token_is_cached_until_shortly_before_expiry(upstream):
    assert oauth.get_token(**args(upstream)) == oauth.get_token(**args(upstream))
    assert upstream.tokens_issued == 1


def test_token_expiring_within_the_margin_is_fetched_again(upstream):
    upstream.token_ttl = oauth.EXPIRY_MARGIN_S
    first = oauth.get_token(**args(upstream))
    second = oauth.get_token(**args(upstream))
    assert first != second and upstream.tokens_issued == 2


def test_invalidate_forces_a_new_token(upstream):
    first = oauth.get_token(**args(upstream))
    oauth.invalidate(**args(upstream))
    assert oauth.get_token(**args(upstream)) != first


def test_changed_secret_does_not_reuse_the_cached_token(upstream):
    oauth.get_token(**args(upstream))
    upstream.oauth_clients["test-client"] = "another-secret-0002"
    oauth.get_token(**args(upstream, client_secret="another-secret-0002"))
    assert upstream.tokens_issued == 2


def test_cached_token_is_encrypted_and_keyed_without_the_secret(upstream):
    token = oauth.get_token(**args(upstream))
    key = oauth.cache_key(**args(upstream))
    stored = cache.get(key)
    assert stored and token not in stored and SECRET not in stored
    assert SECRET not in key


def test_refused_client_credentials_are_an_auth_error(upstream):
    with pytest.raises(ProviderError) as err:
        oauth.get_token(**args(upstream, client_secret="wrong"))
    assert err.value.error_class == "auth"
    assert "wrong" not in err.value.message


def test_token_endpoint_down_is_unreachable(closed_port_url):
    with pytest.raises(ProviderError) as err:
        oauth.get_token(token_url=closed_port_url, client_id="c", client_secret=SECRET)
    assert err.value.error_class == "unreachable"


def test_token_endpoint_server_error_is_a_provider_error(upstream):
    upstream.set_mode(500)
    with pytest.raises(ProviderError) as err:
        oauth.get_token(**args(upstream))
    assert err.value.error_class == "provider_error"


def test_token_url_outside_the_egress_policy_is_blocked(upstream, settings):
    settings.LLMCONN_EGRESS_ALLOW = []
    with pytest.raises(ProviderError) as err:
        oauth.get_token(**args(upstream))
    assert err.value.error_class == "blocked"
    assert upstream.request_count == 0


def test_async_token_fetch_shares_the_cache(upstream):
    token = asyncio.run(oauth.aget_token(**args(upstream)))
    assert oauth.get_token(**args(upstream)) == token
    assert upstream.tokens_issued == 1
