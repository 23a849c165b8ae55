"""The hash chain: canonical form of an event and its hash. One place, used to write and verify.

hash = SHA-256 over a canonical JSON (sorted keys, no spaces, ASCII) of every recorded field
plus the previous event's hash; the first event follows GENESIS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

GENESIS = "0" * 64

HASHED_FIELDS = (
    "seq", "created_at", "actor_id", "actor_name", "auth_kind", "ip", "user_agent", "action",
    "target_type", "target_id", "target_name", "outcome", "changed_fields",
    "secret_fingerprints", "extra", "prev_hash",
)


def _timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(values: dict) -> bytes:
    """The canonical bytes of an event's fields (a dict with HASHED_FIELDS)."""
    data = {name: values[name] for name in HASHED_FIELDS}
    data["created_at"] = _timestamp(data["created_at"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_hash(values: dict) -> str:
    """The hash an event with these field values must carry."""
    return hashlib.sha256(canonical(values)).hexdigest()


def values_of(event) -> dict:
    """The hashed field values of a saved or unsaved AuditEvent."""
    return {name: getattr(event, name) for name in HASHED_FIELDS}
