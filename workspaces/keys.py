"""Authentication of workspace API keys (`Authorization: Bearer lck_...`) for the gateway.

A key is looked up by its SHA-256 hash. Each process remembers the keys it has seen, validated
against the shared revision stamp like resolutions are (revoking a key bumps it), so a known
key costs no query while a revoked one is refused from the next call on in every process.
Unknown keys are not remembered (a flood of random keys must not fill memory).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .constants import API_KEY_PREFIX, MAX_CACHED_KEYS, RESOLUTION_MAX_AGE_SECONDS
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


_KEYS: dict[str, tuple[int, float, KeyIdentity]] = {}
_LOCK = threading.Lock()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header (None if absent or another scheme)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_key(raw_key: str | None, *, revision: int | None) -> KeyIdentity | None:
    """The active key matching `raw_key`, or None (unknown, malformed or revoked)."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
        return None
    digest = hash_api_key(raw_key)
    now = time.monotonic()
    hit = _KEYS.get(digest)
    if (hit is not None and revision is not None and hit[0] == revision
            and now - hit[1] < RESOLUTION_MAX_AGE_SECONDS):
        return hit[2]
    row = (WorkspaceAPIKey.objects.filter(key_hash=digest, revoked_at__isnull=True)
           .select_related("workspace", "user")
           .only("id", "prefix", "workspace__id", "workspace__slug", "user__id",
                 "user__username", "user__is_active", "created_by_id")
           .first())
    if row is None:
        _KEYS.pop(digest, None)
        return None
    if row.workspace_id is None:
        if not row.user.is_active:  # a deactivated user's keys stop at once
            _KEYS.pop(digest, None)
            return None
        identity = KeyIdentity(key_id=row.id, workspace_id=None,
                               workspace_slug=f"~{row.user.get_username()}", prefix=row.prefix,
                               user_id=row.user_id, personal=True)
    else:
        identity = KeyIdentity(key_id=row.id, workspace_id=row.workspace_id,
                               workspace_slug=row.workspace.slug, prefix=row.prefix,
                               user_id=row.created_by_id)
    if revision is not None:
        with _LOCK:
            if len(_KEYS) >= MAX_CACHED_KEYS:
                _KEYS.clear()
            _KEYS[digest] = (revision, now, identity)
    return identity


def cached_identity(raw_key: str | None) -> tuple[int, KeyIdentity] | None:
    """(stamp it was cached under, identity) of a key this process already knows, without any
    query; None when unknown or older than RESOLUTION_MAX_AGE_SECONDS. The caller must check
    that the stamp is still the current one (the gateway's warm path, workspaces/gateway.py)."""
    if not raw_key or not raw_key.startswith(API_KEY_PREFIX) or len(raw_key) > 200:
        return None
    hit = _KEYS.get(hash_api_key(raw_key))
    if hit is None or time.monotonic() - hit[1] >= RESOLUTION_MAX_AGE_SECONDS:
        return None
    return hit[0], hit[2]
