"""Authentication of workspace API keys (`Authorization: Bearer lck_...`) for the gateway.

A key is looked up by its SHA-256 hash. Each process remembers the keys it has seen, validated
against the version of the key's own scope (llmconn.versions.key: revoking a key or deleting
its workspace bumps it) and the global stamp, so a known key costs no query while a revoked
one is refused from the next call on in every process.
Unknown keys are not remembered (a flood of random keys must not fill memory).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from llmconn import versions
from llmconn.prepared import Prepared
from llmconn.versions import Versions

from .constants import API_KEY_PREFIX, MAX_CACHED_KEYS, cache_max_age
from .models import WorkspaceAPIKey
from .services import hash_api_key


@dataclass(frozen=True)
class KeyIdentity:
    """Who is calling: an active API key of one workspace, or a user's personal key
    (`workspace_id` None, `personal` True)."""

    key_id: int
    workspace_id: int | None
    workspace_slug: str
    prefix: str
    user_id: int | None = None  # a personal key's owner; a workspace key's creator
    personal: bool = False

    @property
    def scope_id(self) -> int:
        """What resolution is keyed by: the workspace, or the user's personal scope."""
        if self.personal:
            from .resolution import personal_scope

            return personal_scope(self.user_id)
        return self.workspace_id


# sha256 → (((scope, version), ...), cached at (monotonic), identity)
_KEYS: dict[str, tuple[tuple, float, KeyIdentity]] = {}
_LOCK = threading.Lock()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header (None if absent or another scheme)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# The active key with this hash (compiled once per process: see llmconn/prepared.py).
_KEY = Prepared(
    WorkspaceAPIKey,
    lambda digest: WorkspaceAPIKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
    .values_list("id", "workspace_id", "workspace__slug", "prefix", "user_id", "user__username",
                 "user__is_active", "created_by_id")[:1],
    digest="\x01digest")


def key_scopes(digest: str) -> list[str]:
    """The scopes a remembered key depends on."""
    return [versions.GLOBAL, versions.key(digest)]


def authenticate_key(raw_key: str | None, *, revision: Versions | None) -> KeyIdentity | None:
    """The active key matching `raw_key`, or None (unknown, malformed or revoked)."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
        return None
    digest = hash_api_key(raw_key)
    now = time.monotonic()
    hit = _KEYS.get(digest)
    if (hit is not None and revision is not None and now - hit[1] < cache_max_age()
            and revision.current(hit[0])):
        return hit[2]
    scopes = key_scopes(digest)
    epoch = None
    if revision is not None:  # before the query; a missing key scope is not created yet
        if any(s not in revision.values for s in scopes):
            revision.fetch(scopes, create=False)
        epoch = revision.get(versions.EPOCH)
    rows = _KEY.rows(digest=digest)
    if not rows:
        _KEYS.pop(digest, None)
        return None
    key_id, workspace_id, slug, prefix, user_id, username, user_active, creator = rows[0]
    if workspace_id is None:
        if not user_active:  # a deactivated user's keys stop at once
            _KEYS.pop(digest, None)
            return None
        identity = KeyIdentity(key_id=key_id, workspace_id=None, workspace_slug=f"~{username}",
                               prefix=prefix, user_id=user_id, personal=True)
    else:
        identity = KeyIdentity(key_id=key_id, workspace_id=workspace_id, workspace_slug=slug,
                               prefix=prefix, user_id=creator)
    # A real key without a version yet (made before versions existed, or evicted) gets one
    # now; the identity is kept only if nothing changed meanwhile (Versions.settle).
    deps = revision.settle(scopes, epoch) if revision is not None else None
    if deps is not None:
        with _LOCK:
            if len(_KEYS) >= MAX_CACHED_KEYS:
                _KEYS.clear()
            _KEYS[digest] = (deps, now, identity)
    return identity


def cached_identity(raw_key: str | None) -> tuple[tuple, KeyIdentity] | None:
    """(((scope, version), ...) it was cached under, identity) of a key this process already
    knows, without any query; None when unknown or older than the maximum age. The
    caller must check that the versions are still current (the gateway's warm path,
    workspaces/gateway/planning.py)."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
        return None
    hit = _KEYS.get(hash_api_key(raw_key))
    if hit is None or time.monotonic() - hit[1] >= cache_max_age():
        return None
    return hit[0], hit[2]
