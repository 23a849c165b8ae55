"""Hot-path access to the Redis behind Django's cache, for the few keys read on every call.

Django's RedisCache builds a new `redis.Redis` object for every operation (`get_client`), and
redis-py 8 fills ~170 response callbacks into each new one: about 0.2 ms of CPU per cache
operation, more than the round trip to a local Redis. The gateway reads the revision stamp and
counts the per-key throttle on every call, so those two use one client per process (redis-py
clients are thread-safe; they share the cache's connection settings and serializer format:
integers are stored as plain numbers, https://docs.djangoproject.com/en/5.2/topics/cache/#redis).
Everything else keeps going through `django.core.cache.cache`.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from django.core.signals import setting_changed

_CLIENT: list = [None, None]  # [server list, redis.Redis]
_LOCK = threading.Lock()
_ASYNC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> (servers, client)
_BACKEND: list = [False, None]  # [looked up, RedisCache or None]


def redis_backend():
    """The default cache backend when it is Django's RedisCache, else None.

    Looked up once per process (`caches["default"]` goes through asgiref's Local, a measurable
    part of a warm call) and again after a CACHES setting change (tests). Only its connection
    settings and key function are used here, which are the same in every thread."""
    if not _BACKEND[0]:
        from django.core.cache import caches
        from django.core.cache.backends.redis import RedisCache

        backend = caches["default"]
        _BACKEND[:] = [True, backend if isinstance(backend, RedisCache) else None]
    return _BACKEND[1]


def client_and_key(key: str):
    """(redis.Redis, full key) for a key of the default cache; (None, None) when the cache is
    not Redis."""
    backend = redis_backend()
    if backend is None:
        return None, None
    full = backend.make_key(key)  # our own keys: no memcached-compatibility check needed
    cached = _CLIENT[1]
    if cached is None or _CLIENT[0] != backend._servers:
        with _LOCK:
            cached = backend._cache.get_client(full, write=True)
            _CLIENT[:] = [backend._servers, cached]
    return cached, full


def async_client_and_key(key: str):
    """(redis.asyncio.Redis, full key) for a key of the default cache, for code on an event
    loop (one client per loop: its connections belong to it); (None, None) when the cache is
    not Redis. Same connection settings and key format as `client_and_key`."""
    backend = redis_backend()
    if backend is None:
        return None, None
    full = backend.make_key(key)
    loop = asyncio.get_running_loop()
    found = _ASYNC.get(loop)
    if found is None or found[0] != backend._servers:
        import redis.asyncio

        options = {k: v for k, v in (backend._options or {}).items()
                   if k in ("socket_timeout", "socket_connect_timeout", "db", "password",
                            "username")}
        client = redis.asyncio.Redis.from_url(backend._servers[0], **options)
        found = _ASYNC[loop] = (backend._servers, client)
    return found[1], full


def reset() -> None:
    """Forget the backend and the clients (tests that change the cache settings)."""
    _BACKEND[:] = [False, None]
    _CLIENT[:] = [None, None]
    _ASYNC.clear()


def _setting_changed(setting: str, **_) -> None:
    if setting == "CACHES":
        reset()


setting_changed.connect(_setting_changed)
