"""Rate limits on the shared cache: connection tests/discovery per user, the /v1 gateway per key.

Both count requests in fixed windows with one atomic `cache.add` + `cache.incr` per request
(Redis INCR in production, so every web process shares the count), which stays O(1) however
high the rate; DRF's SimpleRateThrottle keeps a list of timestamps per client and rewrites it
on every request, which would cost more than the gateway call it guards. A fixed window lets
a client burst up to twice the rate across a window boundary; that is the accepted price.

Rates come from settings (environment): `LLMCONN_THROTTLE_TESTS` (POSTs that start a test or
a discovery, per user) and `LLMCONN_THROTTLE_GATEWAY` (calls per workspace API key), in DRF's
notation `N/s|m|h|d` (`30/min`); empty disables. A cache outage lets requests through (logged):
a throttle must not turn a Redis outage into an API outage.
https://www.django-rest-framework.org/api-guide/throttling/
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.cache import cache
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """"30/min" → (30, 60); empty or None → None (no limit). ValueError when malformed."""
    if not rate or not str(rate).strip():
        return None
    count, _, period = str(rate).strip().partition("/")
    if not count.strip().isdigit() or not period.strip() or period.strip()[0] not in _PERIODS:
        raise ValueError(f"invalid rate {rate!r}: use N/s, N/min, N/hour or N/day")
    return int(count), _PERIODS[period.strip()[0]]


def hit(scope: str, ident: str, rate: str | None) -> float | None:
    """Count one request of `ident` in `scope`; None if allowed, else seconds until allowed."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    limit, period = parsed
    now = time.time()
    window = int(now // period)
    key = f"llmconn:throttle:{scope}:{ident}:{window}"
    try:
        count = _count(key, period + 1)
    except ValueError:  # evicted between add and incr: count this one as the first
        count = 1
    except Exception:  # noqa: BLE001 - cache down: let the request through
        logger.warning("Throttle %s not applied: the cache is unreachable", scope)
        return None
    if count <= limit:
        return None
    return max(1.0, (window + 1) * period - now)


def _count(key: str, timeout: int) -> int:
    """Add one to a window's counter and return it. On Redis one round trip (SET NX EX and
    INCR in a pipeline) instead of the three of cache.add + cache.incr: the gateway pays it on
    every call."""
    from .rediscache import client_and_key

    client, full = client_and_key(key)
    if client is not None:
        pipe = client.pipeline()
        for command in window_commands(full, timeout):
            pipe.execute_command(*command)
        return int(pipe.execute()[1])
    cache.add(key, 0, timeout=timeout)
    return cache.incr(key)


def window_commands(full_key: str, ttl: int) -> list[tuple]:
    """The Redis commands that count one request in a window (the second reply is the count):
    the one definition for `hit` here and the gateway's warm path (workspaces.gateway.planning.
    WarmCheck, which sends them asynchronously with the revision stamp's GET)."""
    return [("SET", full_key, 0, "EX", ttl, "NX"), ("INCR", full_key)]


def _rate(name: str) -> str:
    return getattr(settings, name, "") or ""


class ConnectionTestThrottle(BaseThrottle):
    """DRF throttle for the views that start a connection test or a model discovery: counts
    POSTs per user (per client address when anonymous, though those are refused anyway)."""

    scope = "connection_tests"
    setting = "LLMCONN_THROTTLE_TESTS"

    def allow_request(self, request, view) -> bool:
        if request.method != "POST":
            return True
        user = getattr(request, "user", None)
        ident = (f"user:{user.pk}" if user is not None and user.is_authenticated
                 else f"ip:{self.get_ident(request)}")
        wait = hit(self.scope, ident, _rate(self.setting))
        if wait is not None:  # raised here so that the message can name the setting
            raise DiagnosticsThrottled(wait)
        return True


class DiagnosticsThrottled(exceptions.Throttled):
    """429 for too many test/discovery requests (Retry-After set by the exception handler)."""

    def __init__(self, wait: float):
        seconds = int(wait + 0.999)
        super().__init__(wait=seconds, detail=(
            f"Too many connection tests or discoveries: try again in {seconds} s (limit "
            f"LLMCONN_THROTTLE_TESTS={_rate('LLMCONN_THROTTLE_TESTS')})."))


def gateway_key_wait(key_id: int) -> float | None:
    """Count one /v1 call of a workspace API key: None if allowed, else the seconds until it
    is (the gateway answers 429 with Retry-After, workspaces.gateway.errors.GatewayThrottled).

    Called by workspaces.gateway.planning once the key is authenticated.
    """
    return hit("gateway_key", str(key_id), gateway_rate())


def gateway_rate() -> str:
    """LLMCONN_THROTTLE_GATEWAY ("" when off)."""
    return _rate("LLMCONN_THROTTLE_GATEWAY")


def gateway_window(key_id: int) -> tuple[str, int, int, float] | None:
    """(cache key, TTL, limit, end of window) of a key's current /v1 throttle window, for a
    caller that counts it itself (the gateway's warm path: one Redis pipeline with the revision
    stamp); None when LLMCONN_THROTTLE_GATEWAY is off. Same key and TTL as `hit`."""
    parsed = parse_rate(gateway_rate())
    if parsed is None:
        return None
    limit, period = parsed
    window = int(time.time() // period)
    return (f"llmconn:throttle:gateway_key:{key_id}:{window}", period + 1, limit,
            float((window + 1) * period))
