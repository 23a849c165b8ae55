"""The keyed hash chain: canonical form of an event and its hash. One place, used to write and
verify.

hash = HMAC-SHA256 with AUDIT_HMAC_KEY (RFC 2104) over a canonical JSON (sorted keys, no
spaces, ASCII) of every recorded field plus the previous event's hash; the first event follows
GENESIS. Without the key, nobody who can write the database can recompute the chain after
editing an event; with the key kept outside the database, `audit_checkpoint` heads kept
elsewhere prove the log was not rewritten even by someone who has it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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


def chain_key() -> bytes:
    """AUDIT_HMAC_KEY (settings require it; development gets a generated one)."""
    from django.conf import settings

    key = getattr(settings, "AUDIT_HMAC_KEY", "")
    if not key:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("AUDIT_HMAC_KEY is not set: the audit chain needs its key.")
    return key.encode() if isinstance(key, str) else key


def event_hash(values: dict, *, key: bytes | None = None) -> str:
    """The hash an event with these field values must carry (HMAC-SHA256 under the key)."""
    return hmac.new(key if key is not None else chain_key(), canonical(values),
                    hashlib.sha256).hexdigest()


def unkeyed_event_hash(values: dict) -> str:
    """The plain SHA-256 hash of the chain before it was keyed (migration 0003 only)."""
    return hashlib.sha256(canonical(values)).hexdigest()


def values_of(event) -> dict:
    """The hashed field values of a saved or unsaved AuditEvent."""
    return {name: getattr(event, name) for name in HASHED_FIELDS}
