"""OAuth 2.0 client-credentials tokens (RFC 6749 section 4.4), fetched and cached.

Token requests (OAuth token URLs and Azure AD's) leave through providers.transport like every
provider call: one DNS resolution whose every address is checked and connected to, no
redirects (a 3xx is `blocked`), verified TLS.

A token is cached in the Django cache (Redis in production, so every worker shares it) until
60 seconds before it expires, then fetched again. The cache key is an HMAC of (token_url,
client_id, client_secret, scope, audience) under SECRET_KEY, so a changed secret never reuses an
old token and the key reveals nothing; the cached value is Fernet-encrypted with the primary
FERNET_KEYS key, because the token is a secret too (a Redis dump must not hold usable bearer
tokens). Tokens and client secrets are never logged or put in exception messages.

`get_token` (sync) and `aget_token` (async) return a token string; `invalidate` drops a cached
token (call it when the API answers 401 with it, then fetch again once). Failures raise
`providers.errors.ProviderError` with the contract's error classes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from django.conf import settings
from django.core.cache import cache

from .errors import AUTH, PROVIDER_ERROR, ProviderError, classify

logger = logging.getLogger(__name__)

EXPIRY_MARGIN_S = 60  # refresh this long before the token expires
DEFAULT_EXPIRES_IN_S = 300  # when the server does not say (expires_in is only RECOMMENDED)
TIMEOUT_S = 10.0
CACHE_PREFIX = "llmconn:oauth:"


def cache_key(*, token_url: str, client_id: str, client_secret: str, scope: str = "",
              audience: str = "") -> str:
    """The cache key for one credential set: an HMAC, so it reveals nothing about the secret."""
    material = json.dumps([token_url, client_id, client_secret, scope or "", audience or ""])
    digest = hmac.new(settings.SECRET_KEY.encode(), material.encode(), hashlib.sha256)
    return CACHE_PREFIX + digest.hexdigest()


def _fernet():
    from cryptography.fernet import Fernet
    from fernet_fields import hkdf

    key = settings.FERNET_KEYS[0]
    derived = hkdf.derive_fernet_key(key) if getattr(settings, "FERNET_USE_HKDF", True) else key.encode()
    return Fernet(derived)


def _cached(key: str) -> str | None:
    from cryptography.fernet import InvalidToken

    try:
        blob = cache.get(key)
    except Exception:  # a cache outage must not stop calls: fetch a token instead
        logger.warning("OAuth token cache unavailable; fetching a new token")
        return None
    if not blob:
        return None
    try:
        return _fernet().decrypt(blob.encode() if isinstance(blob, str) else blob).decode()
    except (InvalidToken, ValueError):
        return None


def _store(key: str, token: str, expires_in) -> None:
    try:
        ttl = int(float(expires_in)) if expires_in is not None else DEFAULT_EXPIRES_IN_S
    except (TypeError, ValueError):
        ttl = DEFAULT_EXPIRES_IN_S
    ttl -= EXPIRY_MARGIN_S
    if ttl <= 0:
        return  # too short-lived to cache: fetch one per call
    try:
        cache.set(key, _fernet().encrypt(token.encode()).decode(), timeout=ttl)
    except Exception:
        logger.warning("OAuth token cache unavailable; the token is not cached")


def _form(client_id: str, client_secret: str, scope: str, audience: str) -> dict:
    form = {"grant_type": "client_credentials", "client_id": client_id,
            "client_secret": client_secret}
    if scope:
        form["scope"] = scope
    if audience:
        form["audience"] = audience
    return form


def _token_from(response, host: str) -> tuple[str, object]:
    if response.status_code in (400, 401, 403):
        # RFC 6749 5.2: invalid_client / invalid_grant / unauthorized_client...
        raise ProviderError(AUTH, f"The OAuth token endpoint at {host} refused the client "
                            f"credentials (HTTP {response.status_code}).",
                            upstream_status=response.status_code)
    if response.status_code >= 300:
        import httpx

        exc = httpx.HTTPStatusError("token endpoint", request=response.request, response=response)
        err = classify(exc, host=host)
        raise ProviderError(err.error_class, f"OAuth token endpoint: {err.message}",
                            upstream_status=err.upstream_status,
                            retry_after=err.retry_after)
    try:
        data = response.json()
        token = data["access_token"]
        if not isinstance(token, str) or not token:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ProviderError(PROVIDER_ERROR, f"The OAuth token endpoint at {host} answered "
                            "without an access_token.") from None
    return token, data.get("expires_in")


def _host(token_url: str) -> str:
    from urllib.parse import urlsplit

    try:
        return urlsplit(token_url).hostname or "the token endpoint"
    except ValueError:
        return "the token endpoint"


async def _fetch(token_url: str, form: dict, host: str, timeout: float,
                 ca_cert: str = "") -> tuple[str, object]:
    """POST the token request through the transport (the egress check happens at its one DNS
    resolution: the address checked is the address connected to; TLS trusts the system roots
    and the connection's `ca_cert`)."""
    from .transport import httpx_client

    try:
        async with httpx_client(timeout=timeout, ca_cert=ca_cert) as client:
            response = await client.post(token_url, data=form,
                                         headers={"Accept": "application/json"})
    except Exception as exc:  # httpx errors, and the guard's EgressBlocked / LookupError
        raise classify(exc, host=host) from None
    return _token_from(response, host)


def get_token(*, token_url: str, client_id: str, client_secret: str, scope: str = "",
              audience: str = "", ca_cert: str = "", timeout: float = TIMEOUT_S) -> str:
    """A valid access token for these client credentials (cached, refreshed before expiry)."""
    from .transport import run_sync

    key = cache_key(token_url=token_url, client_id=client_id, client_secret=client_secret,
                    scope=scope, audience=audience)
    token = _cached(key)
    if token:
        return token
    host = _host(token_url)
    token, expires_in = run_sync(_fetch(token_url, _form(client_id, client_secret, scope,
                                                         audience), host, timeout, ca_cert))
    _store(key, token, expires_in)
    logger.info("Fetched an OAuth token from %s (expires in %s s)", host, expires_in)
    return token


async def aget_token(*, token_url: str, client_id: str, client_secret: str, scope: str = "",
                     audience: str = "", ca_cert: str = "", timeout: float = TIMEOUT_S) -> str:
    """Async `get_token`."""
    from asgiref.sync import sync_to_async

    key = cache_key(token_url=token_url, client_id=client_id, client_secret=client_secret,
                    scope=scope, audience=audience)
    token = await sync_to_async(_cached, thread_sensitive=False)(key)
    if token:
        return token
    host = _host(token_url)
    token, expires_in = await _fetch(token_url, _form(client_id, client_secret, scope, audience),
                                     host, timeout, ca_cert)
    await sync_to_async(_store, thread_sensitive=False)(key, token, expires_in)
    logger.info("Fetched an OAuth token from %s (expires in %s s)", host, expires_in)
    return token


def invalidate(*, token_url: str, client_id: str, client_secret: str, scope: str = "",
               audience: str = "", ca_cert: str = "") -> None:
    """Forget a cached token (e.g. after the API answered 401 with it)."""
    key = cache_key(token_url=token_url, client_id=client_id, client_secret=client_secret,
                    scope=scope, audience=audience)
    try:
        cache.delete(key)
    except Exception:
        logger.warning("OAuth token cache unavailable; could not drop a token")


async def ainvalidate(**args) -> None:
    """Async `invalidate`."""
    from asgiref.sync import sync_to_async

    await sync_to_async(invalidate, thread_sensitive=False)(**args)


async def adrop_token(*, provider: str, auth_method: str, config: dict, secrets) -> bool:
    """After a provider refused a call with an OAuth token (401/403): drop the cached token so
    the next call fetches a new one. False when the auth method uses no token."""
    from .params import oauth_args
    from .validation import config_with_defaults

    try:
        args = oauth_args(auth_method=auth_method,
                          config=config_with_defaults(provider, auth_method, config or {}),
                          secrets=secrets)
    except ProviderError:
        return False
    if not args:
        return False
    await ainvalidate(**args)
    logger.info("Provider refused a cached OAuth token; fetching a new one")
    return True
