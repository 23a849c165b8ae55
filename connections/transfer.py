"""Export and import of connections as JSON without secrets (keyed fingerprints in their place).

The export carries every setting, credential hints and fingerprints of the shared connections
(the workspaces app adds system defaults, workspaces and budgets: workspaces.config_transfer).
An import creates what is missing; a connection whose secrets the file cannot
carry is created inactive and listed as "needs secrets" (enter them with PATCH, then activate).
Fingerprints (HMAC with AUDIT_HMAC_KEY) let an import tell whether an existing connection
already holds the same secret, when both installs share that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record, secret_fingerprint
from llmconn.errors import ApplicationError, ValidationFailed, error_text
from providers.base import find_provider
from providers.validation import validate_connection_settings

from .models import Connection
from .services import EDITABLE_FIELDS

FORMAT = "llmconn-connections"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 2 adds gateway settings, workspaces and budgets
SETTINGS = ("provider", "auth_method", "base_url", "default_model", "config", "is_active")
# Settings that do not decide where a secret goes: an import brings existing connections in
# line with the file for these (the destination needs the secrets, which a file never has).
TUNABLE = ("default_model", "input_cost_per_million_tokens", "output_cost_per_million_tokens",
           "timeout_seconds", "default_params")


def _tunable(conn: Connection) -> dict:
    return {"default_model": conn.default_model,
            "input_cost_per_million_tokens": _decimal_text(conn.input_cost_per_million_tokens),
            "output_cost_per_million_tokens": _decimal_text(conn.output_cost_per_million_tokens),
            "timeout_seconds": conn.timeout_seconds,
            "default_params": dict(conn.default_params or {})}


def _decimal_text(value) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def connections_export() -> dict:
    """Every shared connection as a JSON-ready dict, with no secret in it.

    Personal connections belong to their users and are not exported."""
    rows = []
    for conn in Connection.objects.filter(owner__isnull=True).order_by("name"):
        if conn.credentials_readable:
            creds = {k: {"fingerprint": secret_fingerprint(v),
                         "hint": (conn.secret_hints or {}).get(k, "")}
                     for k, v in sorted((conn.secrets or {}).items())}
        else:
            creds = {k: {"fingerprint": None, "hint": "", "readable": False}
                     for k in sorted(conn.secret_hints or {})}
        rows.append({"id": str(conn.pk), "name": conn.name,
                     **{k: getattr(conn, k) for k in SETTINGS}, **_tunable(conn),
                     "is_default": conn.is_default, "credentials": creds})
    return {"format": FORMAT, "version": VERSION,
            "exported_at": timezone.now().isoformat(), "connections": rows}


@dataclass
class ImportReport:
    """What an import did, and which connections still need their secrets entered."""

    lines: list[str] = field(default_factory=list)
    needs_secrets: list[tuple[str, list[str]]] = field(default_factory=list)
    errors: int = 0
    changed: bool = False


def _required_secrets(provider: str, auth_method: str) -> list[str]:
    spec = find_provider(provider)
    if spec is None:
        return []
    return sorted(f.name for f in spec.all_fields(auth_method) if f.secret and f.required)


@transaction.atomic
def connection_import_one(*, row: Mapping, actor=None) -> tuple[Connection, list[str]]:
    """Create one connection from an export row, without secrets; inactive when its provider
    needs secrets. Returns it and the secret fields to enter."""
    settings_ = {k: row.get(k) for k in SETTINGS if k in row}
    provider, auth_method = settings_.get("provider"), settings_.get("auth_method")
    if not isinstance(provider, str) or not isinstance(auth_method, str):
        raise ValidationFailed("provider and auth_method are required strings.")
    config = settings_.get("config") or {}
    for key, kind in (("base_url", (str, type(None))), ("default_model", (str, type(None))),
                      ("config", dict), ("is_active", bool)):
        if key in settings_ and not isinstance(settings_[key], kind):
            raise ValidationFailed(f"{key} has the wrong type.", fields={key: ["Wrong type."]})
    validate_connection_settings(provider=provider, auth_method=auth_method,
                                 base_url=settings_.get("base_url") or None, config=config,
                                 secrets=None)
    missing = _required_secrets(provider, auth_method)
    conn = Connection(
        name=row.get("name"), provider=provider, auth_method=auth_method,
        base_url=settings_.get("base_url") or None,
        default_model=settings_.get("default_model") or "", config=config, secrets={},
        secret_hints={}, is_active=bool(settings_.get("is_active", True)) and not missing,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    # The exported id when it is free, so that bindings, fallbacks and `resolved` read the
    # same on both installs.
    try:
        import uuid

        wanted = uuid.UUID(str(row.get("id")))
    except ValueError:
        wanted = None
    if wanted is not None and not Connection.objects.filter(pk=wanted).exists():
        conn.id = wanted
    # The provider's default, also while it waits for its secrets (provider-string bindings
    # resolve to it once they are entered), unless this install has another default already.
    conn.is_default = bool(row.get("is_default")) and not Connection.objects.filter(
        provider=provider, is_default=True).exists()
    for key in TUNABLE[1:]:
        if row.get(key) is not None:
            setattr(conn, key, row[key])
    from providers.default_params import clean_default_params

    try:
        conn.default_params = clean_default_params(conn.default_params)
    except ValueError as exc:
        raise ValidationFailed(str(exc), fields={"default_params": [str(exc)]}) from None
    # Not full_clean(): Connection.clean() requires the secrets, which an export never has.
    conn.clean_fields()
    conn.validate_unique()
    conn.validate_constraints()
    conn.save()
    audit_record(action="connection.import", target=conn, actor=actor,
                 changed_fields=[f for f in EDITABLE_FIELDS if getattr(conn, f) not in (None, "", {})],
                 extra={"needs_secrets": missing})
    return conn, missing


def _same_secrets(conn: Connection, creds: Mapping) -> bool:
    if not conn.credentials_readable:
        return False
    mine = {k: secret_fingerprint(v) for k, v in (conn.secrets or {}).items()}
    theirs = {k: (v or {}).get("fingerprint") for k, v in creds.items() if isinstance(v, Mapping)}
    return mine == theirs


def connections_import(*, data, actor=None) -> ImportReport:
    """Create the connections of an export that do not exist yet and bring the tunable settings
    of existing ones (by name) in line; the report says whether their destination, auth and
    secrets (by fingerprint) match the file. The rest of the file (system defaults, workspaces,
    budgets) is the workspaces app's (workspaces.config_transfer).
    """
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise ValidationFailed(f"Not an llmconn export (expected \"format\": \"{FORMAT}\").")
    if data.get("version") not in READABLE_VERSIONS:
        raise ValidationFailed(f"Unsupported export version {data.get('version')!r}; "
                               f"this install reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}.")
    rows = data.get("connections")
    if not isinstance(rows, list):
        raise ValidationFailed("\"connections\" must be a list.")
    report = ImportReport()
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            report.lines.append("error: skipped an entry without a name")
            report.errors += 1
            continue
        name, creds = row["name"], row.get("credentials") or {}
        existing = Connection.objects.filter(name=name, owner__isnull=True).first()
        if existing is not None:
            tunable = {k: row[k] for k in TUNABLE if k in row}
            current = _tunable(existing)
            changes = {k: v for k, v in tunable.items() if current[k] != (
                v if k != "default_params" else dict(v or {}))}
            if changes:
                try:
                    from .services import connection_update

                    connection_update(connection=existing, actor=actor, **changes)
                except (ApplicationError, ValidationError) as exc:
                    report.lines.append(f"error: {name} not updated: {error_text(exc)}")
                    report.errors += 1
                    continue
                report.changed = True
                report.lines.append(f"updated: {name} ({', '.join(sorted(changes))})")
            diffs = [k for k in SETTINGS if k in row and getattr(existing, k) != row[k]]
            secrets = "same secrets" if _same_secrets(existing, creds) else (
                "secrets differ or cannot be compared")
            state = "matches" if not diffs else f"differs in {', '.join(diffs)}"
            if not changes or diffs:
                report.lines.append(f"exists: {name} ({state}; {secrets}); left unchanged"
                                    if not changes else
                                    f"exists: {name} ({state}; {secrets}); destination and "
                                    "auth left unchanged")
            continue
        try:
            conn, missing = connection_import_one(row=row, actor=actor)
        except (ApplicationError, ValidationError) as exc:
            report.lines.append(f"error: {name} not imported: {error_text(exc)}")
            report.errors += 1
            continue
        report.changed = True
        if missing:
            report.needs_secrets.append((name, missing))
            report.lines.append(f"created: {name} (inactive until its secrets are entered: "
                                f"{', '.join(missing)})")
        else:
            report.lines.append(f"created: {name}")
    return report
