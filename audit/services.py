"""Writes of the audit log. Every event goes through `audit_record`.

Events are written in the caller's transaction (so if the event cannot be written, the change
it records rolls back too) and appended to one hash chain: appends are serialized by a
transaction-scoped advisory lock on PostgreSQL (https://www.postgresql.org/docs/current/
functions-admin.html#FUNCTIONS-ADVISORY-LOCKS); on SQLite the IMMEDIATE transaction mode
already lets one writer in at a time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connection as db_connection
from django.db import models, transaction
from django.utils import timezone

from . import context as audit_context
from .chain import GENESIS, chain_key, event_hash, values_of
from .models import AuditChainHead, AuditEvent, Outcome

FINGERPRINT_PREFIX = "hs256:"
_FINGERPRINT_RE = re.compile(r"^hs256:[0-9a-f]{64}$")
# Arbitrary, fixed: the advisory lock id that serializes audit appends on PostgreSQL.
_CHAIN_LOCK_ID = 7_245_019_331
_SECRET_LOOKING_KEY = re.compile(r"secret|password|api_key|apikey|credential|token_value|header_value",
                                 re.IGNORECASE)


def secret_fingerprint(value: str) -> str:
    """A keyed fingerprint of a secret ("hs256:<hex>"): equal secrets match, the value stays hidden."""
    digest = hmac.new(chain_key(), str(value).encode(), hashlib.sha256).hexdigest()
    return FINGERPRINT_PREFIX + digest


def secret_fingerprints(secrets: Mapping[str, Any] | None) -> dict[str, str]:
    """{field: fingerprint} for a dict of secret values (None values are left out)."""
    return {k: secret_fingerprint(v) for k, v in sorted((secrets or {}).items()) if v is not None}


def _target(target) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    if isinstance(target, models.Model):
        return target._meta.model_name, str(target.pk or ""), str(target)[:200]
    if isinstance(target, Mapping):
        return (str(target.get("type", "")), str(target.get("id", "") or ""),
                str(target.get("name", "") or "")[:200])
    if isinstance(target, (tuple, list)):
        parts = [str(p) if p is not None else "" for p in target] + ["", "", ""]
        return parts[0], parts[1], parts[2][:200]
    return str(target), "", ""


def _clean_ip(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        return ipaddress.ip_address(ip).compressed
    except ValueError:
        return None


def _scrub(extra: Mapping | None) -> dict:
    """Extra details minus anything that could be a secret value (strings under secret-ish keys)."""
    clean: dict = {}
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping):
            clean[str(key)] = _scrub(value)
        elif isinstance(value, str) and _SECRET_LOOKING_KEY.search(str(key)):
            clean[str(key)] = "[removed]"
        else:
            clean[str(key)] = value
    return clean


def _lock_chain() -> None:
    if db_connection.vendor == "postgresql":
        with db_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])


@transaction.atomic
def audit_record(
    *,
    action: str,
    target=None,
    outcome: str = Outcome.SUCCESS,
    changed_fields: Iterable[str] = (),
    secret_fingerprints: Mapping[str, str] | None = None,
    actor=None,
    extra: Mapping | None = None,
) -> AuditEvent:
    """Append one event to the audit log, in the caller's transaction.

    `target`: a model instance, `(type, id, name)` or `{"type", "id", "name"}`.
    `secret_fingerprints`: {field: fingerprint} from `secret_fingerprint()`; a value that is not
    a fingerprint is fingerprinted here, so a secret can never be stored by mistake.
    Actor, auth kind, IP and user agent come from the request/command context unless `actor`
    is given.

    Call it after the transaction's last row lock: it takes the chain lock, held until commit,
    and a writer that locks rows after it can deadlock with one that locked rows first.
    """
    if outcome not in Outcome.values:
        raise ValueError(f"Unknown audit outcome {outcome!r}.")
    who = audit_context.resolve(audit_context.current(), actor=actor)
    user = who["actor"]
    target_type, target_id, target_name = _target(target)
    fingerprints = {
        str(k): (v if isinstance(v, str) and _FINGERPRINT_RE.match(v) else secret_fingerprint(v))
        for k, v in sorted((secret_fingerprints or {}).items()) if v is not None
    }

    _lock_chain()
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    prev_seq, prev_hash = (last["seq"], last["hash"]) if last else (0, GENESIS)

    event = AuditEvent(
        seq=prev_seq + 1,
        created_at=timezone.now(),
        actor=user,
        actor_name=(user.get_username() if user is not None else "")[:150],
        auth_kind=who["auth_kind"],
        ip=_clean_ip(who["ip"]),
        user_agent=(who["user_agent"] or "")[:512],
        action=action[:64],
        target_type=target_type[:64],
        target_id=target_id[:64],
        target_name=target_name,
        outcome=outcome,
        changed_fields=sorted({str(f) for f in changed_fields}),
        secret_fingerprints=fingerprints,
        extra=_scrub(extra),
        prev_hash=prev_hash,
    )
    event.hash = event_hash(values_of(event))
    event.save()
    AuditChainHead.objects.filter(pk=head.pk).update(seq=event.seq, hash=event.hash)
    return event


_TRIGGER = "audit_event_append_only"


@transaction.atomic
def audit_chain_rekey(*, previous_key: bytes, actor=None) -> AuditEvent:
    """Re-chain every event under the current AUDIT_HMAC_KEY, after proving the whole chain
    under `previous_key`, and append an `audit.rekey` event naming the old head (so that a
    checkpoint kept outside the database can be matched to the new chain).

    For a key that leaked or must change. Secret fingerprints already recorded stay as they
    were made (the secrets are not known here); new ones use the new key.
    """
    from llmconn.errors import ValidationFailed

    from .selectors import audit_chain_verify

    _lock_chain()
    AuditChainHead.objects.select_for_update().get_or_create(pk=1)
    checked, problem = audit_chain_verify(key=previous_key)
    if problem is not None:
        raise ValidationFailed(
            f"The audit chain does not verify under the previous key ({problem}): nothing was "
            "re-keyed. Check AUDIT_HMAC_PREVIOUS_KEY, or investigate the chain first.",
            code="audit_chain_broken")
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    previous_head = f"{last['seq']}:{last['hash']}" if last else f"0:{GENESIS}"
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE audit_auditevent DISABLE TRIGGER {_TRIGGER}")
        prev = GENESIS
        for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
            event.prev_hash = prev
            digest = event_hash(values_of(event))
            cursor.execute("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
                           [prev, digest, event.pk])
            prev = digest
        if db_connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE audit_auditevent ENABLE TRIGGER {_TRIGGER}")
    if last:
        AuditChainHead.objects.filter(pk=1).update(seq=last["seq"], hash=prev)
    return audit_record(action="audit.rekey", target=("audit", "", "audit chain"), actor=actor,
                        extra={"events": checked, "previous_head": previous_head,
                               "algorithm": "hmac-sha256"})


# Which DRF view actions count as what, for denied attempts.
_ACTION_NAMES = {"partial_update": "update", "destroy": "delete", "retrieve": "read",
                 "list": "list"}


def audit_record_denied(*, request, view) -> AuditEvent | None:
    """Record a refused API call (401/403). Anonymous reads are not recorded (scanner noise)."""
    method = getattr(request, "method", "GET")
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
    if method in ("GET", "HEAD", "OPTIONS") and not authenticated:
        return None
    target_type = getattr(view, "audit_target_type", "")
    if not target_type:
        queryset = getattr(view, "queryset", None)
        model = getattr(queryset, "model", None)
        target_type = model._meta.model_name if model is not None else ""
    if not target_type:
        target_type = type(view).__name__.removesuffix("ViewSet").removesuffix("View").lower()
    view_action = (getattr(view, "audit_action", None) or getattr(view, "action", None)
                   or method.lower())
    action = f"{target_type}.{_ACTION_NAMES.get(view_action, view_action).replace('-', '_')}"
    kwargs = getattr(view, "kwargs", {}) or {}
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")
    target_id = kwargs.get(lookup) or next(iter(kwargs.values()), "")
    return audit_record(
        action=action,
        target=(target_type, target_id, ""),
        outcome=Outcome.DENIED,
        actor=user if authenticated else None,
        extra={"method": method, "path": getattr(request, "path", "")[:300]},
    )
