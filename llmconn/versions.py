"""Versions of cache scopes in the shared cache: how an edit reaches every running process.

Every process keeps what it resolved (API keys, workspace roles, budgets) in memory, each entry
with the scopes it depends on and the version each scope had when the entry was made. A scope
is one integer in the shared cache (Redis): the workspace `w:<id>`, the connection `c:<id>`, the
API key `k:<sha256>`, the system default of a role `d:<role>`, the budgets `b`, and `GLOBAL`
(everything: the stamp all entries also depend on, bumped only by operations that change what
every workspace resolves). A change bumps exactly the scopes it touches (`bump`), so an edit of
one connection makes stale only the entries that name it; a call reads the versions of the
scopes its cached entries depend on (one MGET, `read`) and uses an entry only while they match.

`EPOCH` is bumped with every scope, by every change. It is what lets a call read the versions of
an entry's scopes *after* the queries that made it (one round trip, once the connections used
are known): the entry is kept only when the epoch, read when the call started (before the
queries), did not move meanwhile; otherwise a change committed between a query and the version
read could be stored under the new version (see README "How changes reach running processes").
It is a dependency of failed resolutions only (any change may fix them).

Versions never repeat: a missing scope (never bumped, or lost in a cache flush) is created with
the current time in microseconds, and a bump increments it. Nothing here imports an app: the
connections app bumps its scopes without knowing who caches what.
"""

from __future__ import annotations

import logging
import sys
import time

from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)

GLOBAL = "llmconn:rev"
EPOCH = "llmconn:rev:epoch"
BUDGETS = "llmconn:rev:b"


def connection(pk) -> str:
    """The scope of one connection (its settings, secrets, offered models, default flag)."""
    # interned: thousands of cached entries name the same connection
    return sys.intern(f"llmconn:rev:c:{pk}")


def workspace(pk) -> str:
    """The scope of one workspace (its name, slug and role bindings)."""
    return f"llmconn:rev:w:{pk}"


def key(digest: str) -> str:
    """The scope of one API key, by the SHA-256 of the key (known before any query)."""
    return f"llmconn:rev:k:{digest}"


def default(role: str) -> str:
    """The scope of the system default of one role."""
    return f"llmconn:rev:d:{role}"


def max_age(unshared: float, shared: float) -> float:
    """How long a cached entry may live: `shared` when versions are in Redis (every change is
    announced to every process), `unshared` otherwise."""
    from django.conf import settings

    wrapped = settings._wrapped  # (per settings object: override_settings swaps it)
    if _SHARED_CACHE[0] is not wrapped:
        backend = settings.CACHES["default"]["BACKEND"]
        _SHARED_CACHE[:] = [wrapped, backend == "django.core.cache.backends.redis.RedisCache"]
    return shared if _SHARED_CACHE[1] else unshared


_SHARED_CACHE: list = [None, False]  # [settings object, cache is Redis]


def fresh_value() -> int:
    # A value that never repeats an earlier one even if the key was lost (cache flush):
    # microseconds since the epoch, then incremented.
    return time.time_ns() // 1000


def full_keys(scopes) -> tuple[object, list[str]] | tuple[None, None]:
    """(redis client, full cache keys) of scopes; (None, None) when the cache is not Redis.
    (On every gateway call: the cache's key prefix is taken from the global stamp's full key
    rather than asking the backend for each scope.)"""
    from llmconn.rediscache import client_and_key, redis_backend

    client, full = client_and_key(GLOBAL)
    if client is None:
        return None, None
    if full.endswith(GLOBAL):
        prefix = full[:-len(GLOBAL)]
        return client, [prefix + s for s in scopes]
    make_key = redis_backend().make_key  # a custom KEY_FUNCTION
    return client, [make_key(s) for s in scopes]


def read(scopes: list[str], *, create: bool = True) -> list[int | None]:
    """The current version of each scope (one MGET; a second round trip creates the missing
    ones, unless `create` is False: then a missing one is None). Raises when the cache cannot
    be read. (Scopes named after what a caller sent, e.g. a key's hash, are read without
    `create` until the database confirmed the thing exists: garbage must not fill Redis.)"""
    if not scopes:
        return []
    client, keys = full_keys(scopes)
    if client is None:
        found = cache.get_many(scopes)
        missing = [s for s in scopes if found.get(s) is None] if create else []
        for s in missing:
            cache.add(s, fresh_value(), timeout=None)
        if missing:
            found.update(cache.get_many(missing))
        return [None if found.get(s) is None else int(found[s]) for s in scopes]
    values = client.mget(keys)
    missing = [i for i, v in enumerate(values) if v is None] if create else []
    if missing:
        with client.pipeline(transaction=False) as pipe:
            stamp = fresh_value()
            for i in missing:
                pipe.set(keys[i], stamp, nx=True)
            pipe.mget([keys[i] for i in missing])
            again = pipe.execute()[-1]
        for i, v in zip(missing, again, strict=True):
            values[i] = v
    return [None if v is None else int(v) for v in values]


def _bump_now(scopes: tuple[str, ...]) -> None:
    try:
        client, keys = full_keys(scopes)
        if client is None:
            for s in scopes:
                if not cache.add(s, fresh_value(), timeout=None):
                    cache.incr(s)
            return
        stamp = fresh_value()
        with client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.set(k, stamp, nx=True)
                pipe.incr(k)
            pipe.execute()
    except Exception:  # noqa: BLE001 - a cache outage must not fail the change itself
        logger.error("Could not bump %d cache scope(s) (cache down?): other processes may use "
                     "a stale resolution until their entries expire.", len(scopes))


def bump(*scopes: str) -> None:
    """Mark every cached entry depending on one of `scopes` stale, in every process.

    Bumped now (this process and tests inside a transaction see it at once) and again when the
    surrounding transaction commits, so that no process can re-read the rows between the first
    bump and the commit and keep the old rows under the new version.
    """
    scopes = tuple(dict.fromkeys(s for s in scopes if s))
    if not scopes:
        return
    scopes += (EPOCH,)
    _bump_now(scopes)
    transaction.on_commit(lambda: _bump_now(scopes))


def bump_connections(*pks) -> None:
    """A change to these connections."""
    bump(*[connection(pk) for pk in pks if pk])


class Versions:
    """The versions one call has read (each scope at most once, unless re-read on purpose).

    `frozen`: never reads (the warm path on the event loop): a scope not given is unknown and
    matches nothing. `ok` becomes False when the cache could not be read: nothing read through
    this object may then be cached.
    """

    __slots__ = ("values", "frozen", "ok")

    def __init__(self, values: dict | None = None, *, frozen: bool = False):
        self.values = dict(values or {})
        self.frozen = frozen
        self.ok = True

    def fetch(self, scopes, *, again: bool = False, create: bool = True) -> None:
        """Read the scopes not read yet, or read as missing (all of them with `again`);
        `create`: see `read`."""
        if self.frozen or not self.ok:
            return
        wanted = list(dict.fromkeys(scopes if again else
                                    [s for s in scopes if self.values.get(s) is None]))
        if not wanted:
            return
        try:
            self.values.update(zip(wanted, read(wanted, create=create), strict=True))
        except Exception:  # noqa: BLE001 - a cache outage must not stop calls
            logger.warning("Cache versions unreadable (cache down?): resolving from the "
                           "database.")
            self.ok = False

    def get(self, scope: str) -> int | None:
        self.fetch([scope])
        return self.values.get(scope) if self.ok else None

    def current(self, deps) -> bool:
        """Whether an entry made under `deps` ((scope, version), ...) is still current."""
        if not self.frozen:
            self.fetch([s for s, _ in deps])
        values = self.values
        return self.ok and all(values.get(s) == v for s, v in deps)

    def snapshot(self, scopes) -> tuple[tuple[str, int], ...] | None:
        """The (scope, version) pairs to store with an entry (None when not all are known)."""
        values = self.values
        if not self.ok or any(values.get(s) is None for s in scopes):
            return None
        return tuple((s, values[s]) for s in scopes)

    def settle(self, scopes, epoch: int | None) -> tuple[tuple[str, int], ...] | None:
        """The snapshot to keep an entry under, made from rows queried after `epoch` (EPOCH
        as read before the queries) was read; None when keeping it is not safe.

        Versions read before the queries are safe by order. Those not read yet (or read as
        missing) are read now in one round trip, with the epoch again: if the epoch moved,
        something changed while the entry was made and a new version could hide old rows, so
        the entry must not be kept (the next call makes it again)."""
        unknown = [s for s in scopes if self.values.get(s) is None]
        if unknown:
            self.fetch([*unknown, EPOCH], again=True)
            if epoch is None or self.values.get(EPOCH) != epoch:
                return None
        return self.snapshot(scopes)
