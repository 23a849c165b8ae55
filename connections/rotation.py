"""Staged rotation of a connection's provider secret (its API key, client secret...).

(Re-encrypting stored secrets under a new Fernet key is `connections/key_rotation.py`.)

`connection_rotate_secret` keeps the new secret in `pending_secrets`, tests it against the
provider, and promotes it only if the test passes: the replaced secret moves to
`previous_secrets` for `LLMCONN_SECRET_ROLLBACK_HOURS` so `connection_rollback_secret` can
bring it back. A failing secret is dropped and the old one stays in use. Workspaces resolve
through the connection, so all of them use the new secret from the promotion on (the
connection's `revision` grows, which tells caches).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record, secret_fingerprints
from llmconn.errors import Conflict, ValidationFailed
from llmconn.versions import bump_connections
from providers.validation import validate_connection_settings

from .models import Connection, ConnectionStatus, ErrorClass
from .secrets import make_hint
from .services import check_credentials_input

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecretTestResult:
    """The outcome of testing a candidate secret (never the secret, never upstream text)."""

    ok: bool
    error_class: str = ""
    message: str = ""
    latency_ms: int | None = None
    model: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "error_class": self.error_class, "message": self.message,
                "latency_ms": self.latency_ms, "model": self.model}


# A tester receives an unsaved Connection carrying the candidate secrets and returns a result.
SecretTester = Callable[[Connection], SecretTestResult]


@dataclass(frozen=True)
class RotationOutcome:
    """What a rotation did: promoted (with the rollback deadline) or refused (with the test)."""

    connection: Connection
    promoted: bool
    test: SecretTestResult
    previous_expires_at: dt.datetime | None = None


def rollback_window() -> dt.timedelta:
    return dt.timedelta(hours=getattr(settings, "LLMCONN_SECRET_ROLLBACK_HOURS", 24))


def default_secret_tester(candidate: Connection) -> SecretTestResult:
    """Test a candidate with the project's connection diagnostics (connections/diagnostics.py)."""
    from . import diagnostics

    outcome = diagnostics.test_connection_settings(candidate)
    return SecretTestResult(
        ok=bool(outcome.ok), error_class=outcome.error_class or "",
        message=outcome.message or "", latency_ms=outcome.latency_ms,
        model=getattr(outcome, "model", "") or "",
    )


def _candidate(current: Connection, credentials: dict) -> dict:
    """The complete secret set after rotation: stored secrets with the sent ones replacing them."""
    spec = current.spec
    allowed = set(spec.secret_field_names(current.auth_method)) if spec else set()
    if current.credentials_readable:
        merged = {k: v for k, v in (current.secrets or {}).items() if k in allowed}
    else:
        merged = {}
    for name, value in credentials.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _probe(current: Connection, secrets: dict) -> Connection:
    """An unsaved copy of the connection with the candidate secrets (a fresh id, so nothing
    cached for the stored secret, such as an OAuth token, is reused)."""
    return Connection(
        id=uuid.uuid4(), name=current.name, provider=current.provider,
        auth_method=current.auth_method, base_url=current.base_url,
        default_model=current.default_model, config=dict(current.config or {}),
        secrets=secrets, secret_hints={k: make_hint(v) for k, v in secrets.items()},
    )


@transaction.atomic
def _stage(*, connection: Connection, credentials: dict) -> tuple[Connection, dict, dict]:
    current = Connection.objects.select_for_update().get(pk=connection.pk)
    if not isinstance(credentials, dict) or not credentials:
        raise ValidationFailed(
            "Send the new secret in credentials, e.g. {\"credentials\": {\"api_key\": \"...\"}}.",
            fields={"credentials": ["Required: at least one secret field."]},
        )
    check_credentials_input(credentials, current.secret_hints or {})
    candidate = _candidate(current, credentials)
    try:
        validate_connection_settings(provider=current.provider, auth_method=current.auth_method,
                                     base_url=current.base_url, config=current.config,
                                     secrets=candidate)
    except ValidationError as exc:
        raise ValidationFailed(
            "The new credentials do not fit this connection: "
            + "; ".join(m for msgs in exc.message_dict.values() for m in msgs),
            fields=exc.message_dict,
        ) from None
    current.pending_secrets = candidate
    current.save(update_fields=["pending_secrets", "pending_secrets_key_id"])
    return current, candidate, current.destination


def _run_test(tester: SecretTester, probe: Connection) -> SecretTestResult:
    try:
        result = tester(probe)
    except Exception:  # the old secret stays in use whatever went wrong
        logger.exception("Testing a rotated secret failed unexpectedly")
        return SecretTestResult(ok=False, error_class=ErrorClass.PROVIDER_ERROR,
                                message="The test of the new secret could not be run.")
    return result


@transaction.atomic
def _finish(*, connection: Connection, candidate: dict, sent: dict, result: SecretTestResult,
            destination: dict, actor) -> RotationOutcome:
    current = Connection.objects.select_for_update().get(pk=connection.pk)
    if current.pending_secrets != candidate:
        raise Conflict(
            "Another rotation of this connection's secret started meanwhile; nothing was "
            "changed by this one.",
            code="rotation_conflict",
        )
    if current.destination != destination:
        # The candidate was tested against (and merged for) the old destination.
        raise Conflict(
            "The connection's destination changed while the new secret was being tested; "
            "nothing was changed: rotate again.",
            code="rotation_conflict",
        )
    fingerprints = secret_fingerprints({k: v for k, v in sent.items() if v is not None})
    changed = [f"credentials.{k}" for k in sorted(sent)]
    now = timezone.now()
    current.pending_secrets = None
    if not result.ok:
        current.save(update_fields=["pending_secrets", "pending_secrets_key_id"])
        audit_record(action="connection.rotate_secret", target=current, actor=actor,
                     outcome="failed", changed_fields=[], secret_fingerprints=fingerprints,
                     extra={"error_class": result.error_class, "attempted": changed})
        return RotationOutcome(connection=current, promoted=False, test=result)

    expires = now + rollback_window()
    if current.credentials_readable:
        current.previous_secrets = current.secrets
        current.previous_secrets_expires_at = expires
        current.previous_secrets_destination = destination
    else:
        current.previous_secrets, current.previous_secrets_expires_at, expires = None, None, None
        current.previous_secrets_destination = None
    current.secrets = candidate
    current.secret_hints = {k: make_hint(v) for k, v in candidate.items()}
    current.status = ConnectionStatus.OK
    current.last_tested_at = now
    current.last_error_class = ""
    current.revision += 1
    current.updated_by = actor if getattr(actor, "is_authenticated", False) else None
    current.save(update_fields=[
        "pending_secrets", "pending_secrets_key_id", "previous_secrets",
        "previous_secrets_key_id", "previous_secrets_expires_at",
        "previous_secrets_destination", "secrets", "secrets_key_id", "secret_hints", "status", "last_tested_at", "last_error_class", "revision",
        "updated_by", "updated_at",
    ])
    audit_record(action="connection.rotate_secret", target=current, actor=actor,
                 changed_fields=changed, secret_fingerprints=fingerprints,
                 extra={"previous_expires_at": expires.isoformat() if expires else None,
                        "latency_ms": result.latency_ms})
    bump_connections(current.pk)
    return RotationOutcome(connection=current, promoted=True, test=result,
                           previous_expires_at=expires)


def connection_rotate_secret(*, connection: Connection, credentials: dict, actor=None,
                             tester: SecretTester | None = None) -> RotationOutcome:
    """Stage a new secret, test it, and promote it only if the test passes.

    Not one transaction on purpose: the pending secret is committed before the (slow) test,
    and the promotion re-checks that no other rotation replaced it meanwhile.
    """
    connection_purge_expired_secrets()
    current, candidate, destination = _stage(connection=connection, credentials=credentials)
    result = _run_test(tester or default_secret_tester, _probe(current, candidate))
    return _finish(connection=current, candidate=candidate, sent=credentials, result=result,
                   destination=destination, actor=actor)


@transaction.atomic
def connection_rollback_secret(*, connection: Connection, actor=None) -> Connection:
    """Bring back the secret replaced by the last rotation, while its rollback window lasts."""
    current = Connection.objects.select_for_update().get(pk=connection.pk)
    expires = current.previous_secrets_expires_at
    if current.previous_secrets is None or expires is None or expires <= timezone.now():
        raise Conflict(
            "There is no previous secret to roll back to (none was replaced, or the rollback "
            f"window of {getattr(settings, 'LLMCONN_SECRET_ROLLBACK_HOURS', 24)} h has passed).",
            code="nothing_to_roll_back",
        )
    if not isinstance(current.previous_secrets, dict):
        raise Conflict("The previous secret cannot be decrypted with the configured keys.",
                       code="credentials_unreadable")
    if current.previous_secrets_destination != current.destination:
        # Destination binding: the previous secret was entered for another destination (or
        # for one not recorded, before this check existed); it is never sent to this one.
        raise ValidationFailed(
            "The connection's destination (provider, base URL, URL or endpoint fields) changed "
            "after the previous secret was replaced, so it will not be sent to the new one: "
            "send the secret again instead of rolling back.",
            code="credentials_required",
            fields={"credentials": ["The previous secret belongs to another destination."]},
        )
    restored = current.previous_secrets
    current.secrets = restored
    current.secret_hints = {k: make_hint(v) for k, v in restored.items()}
    current.previous_secrets = None
    current.previous_secrets_expires_at = None
    current.previous_secrets_destination = None
    current.status = ConnectionStatus.UNTESTED
    current.last_error_class = ""
    current.revision += 1
    current.updated_by = actor if getattr(actor, "is_authenticated", False) else None
    current.save(update_fields=[
        "previous_secrets", "previous_secrets_key_id", "previous_secrets_expires_at",
        "previous_secrets_destination", "secrets", "secrets_key_id", "secret_hints", "status",
        "last_error_class", "revision",
        "updated_by", "updated_at",
    ])
    audit_record(action="connection.rollback_secret", target=current, actor=actor,
                 changed_fields=[f"credentials.{k}" for k in sorted(restored)],
                 secret_fingerprints=secret_fingerprints(restored))
    bump_connections(current.pk)
    return current


@transaction.atomic
def connection_purge_expired_secrets() -> int:
    """Forget previous secrets whose rollback window has passed; the number of connections."""
    return Connection.objects.filter(
        previous_secrets_expires_at__lte=timezone.now()
    ).update(previous_secrets=None, previous_secrets_key_id="", previous_secrets_expires_at=None,
             previous_secrets_destination=None)
