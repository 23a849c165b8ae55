"""Writes of connections. Every change (API, admin, commands) goes through these functions.

Masking rules (the bug that made other tools lose keys): a credential value that looks like a
mask or equals the stored hint is refused, never stored; leaving a credential out keeps it; a
new endpoint host needs the secrets sent again, so a stored key never follows a changed URL.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, RestrictedError

from audit.services import audit_record, secret_fingerprints
from llmconn.errors import Conflict, NotFound, ValidationFailed
from llmconn.versions import bump_connections
from providers.base import all_presets, find_provider, get_preset
from providers.validation import validate_base_url

from . import dependents
from .models import Connection
from .secrets import looks_masked, make_hint
from .selectors import connection_dependents

_UNSET: Any = object()
EDITABLE_FIELDS = ("name", "provider", "auth_method", "base_url", "default_model", "config",
                   "is_active", "input_cost_per_million_tokens", "output_cost_per_million_tokens",
                   "timeout_seconds", "default_params")


def check_credentials_input(credentials: dict, hints: dict) -> None:
    """Refuse non-string, empty and masked-looking credential values (before anything is stored
    or sent); None values mean "remove"/"not sent" and pass. Shared by every entry point."""
    if not isinstance(credentials, dict):
        raise ValidationFailed(
            "credentials must be an object of secret fields, e.g. {\"api_key\": \"...\"}.",
            fields={"credentials": ["Must be an object."]},
        )
    for name, value in credentials.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationFailed(
                f"Credential {name!r} must be a string.",
                fields={"credentials": {name: ["Must be a string."]}},
            )
        if value.strip() == "":
            raise ValidationFailed(
                f"Credential {name!r} is empty: leave it out to keep the stored value, or send "
                "null to remove it.",
                fields={"credentials": {name: ["Empty value."]}},
            )
        if looks_masked(value, hints.get(name, "")):
            raise ValidationFailed(
                f"Credential {name!r} looks like a masked placeholder, not a secret. Send the "
                "real value to replace it, or leave the field out to keep the stored one.",
                code="masked_secret",
                fields={"credentials": {name: ["Looks masked; nothing was stored."]}},
            )


def _save(connection: Connection, *, with_secrets: bool) -> None:
    if with_secrets:
        connection.save()
    else:
        fields = [f.attname for f in Connection._meta.concrete_fields
                  if f.attname not in ("id", "secrets", "secrets_key_id", "created_at",
                                       "last_used_at")]
        connection.save(update_fields=fields)


def resolve_auth_method(provider: str, auth_method: str | None) -> str:
    """The auth method to use: the one given, or the provider's only one; refuses an unknown
    provider, or a provider with several methods when none is chosen."""
    spec = find_provider(provider)
    if spec is None:
        raise ValidationFailed(
            f"Unknown provider {provider!r}: see /api/v1/providers/ for the catalog.",
            fields={"provider": ["Unknown provider."]},
        )
    if auth_method:
        return auth_method
    if len(spec.auth_methods) == 1:
        return spec.auth_methods[0].name
    names = ", ".join(m.name for m in spec.auth_methods)
    raise ValidationFailed(
        f"{spec.label} supports several auth methods: choose auth_method ({names}).",
        fields={"auth_method": [f"Required; one of: {names}."]},
    )


@transaction.atomic
def connection_create(
    *,
    name: str,
    provider: str,
    auth_method: str | None = None,
    base_url: str | None = None,
    default_model: str = "",
    config: dict | None = None,
    credentials: dict | None = None,
    is_active: bool = True,
    is_default: bool = False,
    input_cost_per_million_tokens=None,
    output_cost_per_million_tokens=None,
    timeout_seconds: int | None = None,
    default_params: dict | None = None,
    owner=None,
    actor=None,
) -> Connection:
    """Create a connection after validating it against the catalog and the masking rules.

    `owner`: a user for a personal connection (only they see and use it); None: shared."""
    auth_method = resolve_auth_method(provider, auth_method)
    if owner is not None and is_default:
        raise ValidationFailed("A personal connection cannot be its provider's default.",
                               fields={"is_default": ["Not for personal connections."]})
    credentials = credentials or {}
    check_credentials_input(credentials, {})
    if is_default:
        # Take the provider's row locks (set_default needs them) before the audit event takes
        # the chain lock: always rows first, then the chain, so two writers cannot deadlock.
        list(Connection.objects.select_for_update().filter(provider=provider)
             .values_list("pk", flat=True))
    secrets = {k: v for k, v in credentials.items() if v is not None}
    connection = Connection(
        name=name,
        provider=provider,
        auth_method=auth_method,
        base_url=base_url or None,
        default_model=default_model or "",
        config=config if config is not None else {},
        secrets=secrets,
        secret_hints={k: make_hint(v) for k, v in secrets.items()},
        is_active=is_active,
        input_cost_per_million_tokens=input_cost_per_million_tokens,
        output_cost_per_million_tokens=output_cost_per_million_tokens,
        timeout_seconds=timeout_seconds,
        default_params=default_params if default_params is not None else {},
        owner=owner,
        created_by=actor,
        updated_by=actor,
    )
    connection.full_clean()
    connection.save()
    audit_record(
        action="connection.create", target=connection, actor=actor,
        changed_fields=[f for f in EDITABLE_FIELDS if getattr(connection, f) not in (None, "", {})]
        + [f"credentials.{k}" for k in secrets],
        secret_fingerprints=secret_fingerprints(secrets),
        extra={"provider": provider, **({"owner": owner.pk} if owner is not None else {})},
    )
    if is_default:
        connection_set_default(connection=connection, actor=actor)
    else:  # (a resolution that failed for want of a connection is retried: the epoch moves)
        bump_connections(connection.pk)
    return connection


@transaction.atomic
def connection_update(
    *,
    connection: Connection,
    actor=None,
    credentials: dict | None = None,
    **changes: Any,
) -> Connection:
    """Change a connection. Credentials left out are kept; one sent as null is removed.

    Refused (ValidationFailed, nothing stored): masked-looking values; a changed destination
    (Connection.destination: provider, base URL scheme/host/port, URL and endpoint fields)
    without every stored secret sent again; settings the catalog does not accept.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"Cannot change {', '.join(sorted(unknown))}.")
    current = Connection.objects.select_for_update().get(pk=connection.pk)
    before = {f: getattr(current, f) for f in (*EDITABLE_FIELDS, "is_default")}
    readable = current.credentials_readable
    credentials = credentials or {}
    check_credentials_input(credentials, current.secret_hints or {})

    old_provider = current.provider
    old_destination = current.destination
    stored_names = set((current.secrets or {}) if readable else (current.secret_hints or {}))
    if "provider" in changes and changes["provider"] != old_provider and "auth_method" not in changes:
        changes["auth_method"] = None
    for field, value in changes.items():
        if field == "base_url":
            value = value or None
        if field == "auth_method":
            value = resolve_auth_method(changes.get("provider", current.provider), value)
        if field == "default_model":
            value = value or ""
        setattr(current, field, value)
    if find_provider(current.provider) is None:
        resolve_auth_method(current.provider, None)  # raises the "unknown provider" error

    allowed = set(current.spec.secret_field_names(current.auth_method))
    sent = {k for k, v in credentials.items() if v is not None}
    secrets_changed = bool(credentials)
    if readable:
        secrets = {k: v for k, v in (current.secrets or {}).items() if k in allowed}
        secrets_changed = secrets_changed or secrets != (current.secrets or {})
    else:
        secrets = {}
    hints = {k: v for k, v in (current.secret_hints or {}).items() if k in secrets}
    for name, value in credentials.items():
        if value is None:
            secrets.pop(name, None)
            hints.pop(name, None)
        else:
            secrets[name] = value
            hints[name] = make_hint(value)

    required = {f.name for f in current.spec.all_fields(current.auth_method)
                if f.secret and f.required}
    if not readable and secrets_changed and required - sent:
        raise ValidationFailed(
            "The stored credentials cannot be decrypted (they were encrypted with a key "
            "that is no longer configured): send every credential again.",
            code="credentials_unreadable",
            fields={"credentials": [f"Required: {', '.join(sorted(required))}."]},
        )

    # A malformed URL is a base_url error, not an "endpoint changed" one.
    url_problems = validate_base_url(current.base_url) if current.base_url else []
    if url_problems:
        raise ValidationFailed(url_problems[0], fields={"base_url": url_problems})

    # Destination binding (contract): a stored secret is only sent where it was entered.
    moved = current.destination != old_destination
    if moved:
        # Readable: every stored secret that would be kept must be sent again. Unreadable:
        # the secrets it holds (known from their hints) and the required ones, or the old
        # token would follow the new destination once its key is configured again.
        need = ({n for n in secrets if n not in sent} if readable
                else ((stored_names & allowed) | required) - sent)
        if need:
            raise ValidationFailed(
                "The endpoint changed (provider, base URL scheme/host/port, a URL field or a "
                "field that builds the endpoint, such as the region), so the stored secrets "
                "will not be sent to the new destination: send "
                f"{', '.join(sorted(need))} again in credentials.",
                code="credentials_required",
                fields={"credentials": [f"Send again: {', '.join(sorted(need))}."]},
            )

    write_secrets = secrets_changed or moved
    if write_secrets:
        current.secrets = secrets
        current.secret_hints = hints
    # else: secrets and hints stay as stored (an unreadable row keeps its hints).
    if current.is_default and current.provider != old_provider:
        # The default belongs to the old provider's set; bindings that name that provider
        # rely on it (as bound connections do on theirs): refuse, like a delete.
        relied_on = [row for row in connection_dependents(connection=Connection(
            pk=current.pk, provider=old_provider, is_default=True)) if row.get("provider")]
        if relied_on:
            raise Conflict(
                f"Connection {current.name!r} is the {old_provider} default that "
                f"{len(relied_on)} provider binding(s) rely on: make another connection the "
                "default first.", code="connection_in_use", extra={"bindings": relied_on})
        current.is_default = False
    current.updated_by = actor
    current.revision += 1
    current.full_clean()
    _save(current, with_secrets=write_secrets)
    sent = {k: v for k, v in credentials.items() if v is not None}
    audit_record(
        action="connection.update", target=current, actor=actor,
        changed_fields=[f for f, old in before.items() if getattr(current, f) != old]
        + [f"credentials.{k}" for k in credentials],
        secret_fingerprints=secret_fingerprints(sent),
        extra={"credentials_removed": sorted(k for k, v in credentials.items() if v is None)}
        if any(v is None for v in credentials.values()) else None,
    )
    bump_connections(current.pk)
    return current


@transaction.atomic
def connection_delete(*, connection: Connection, actor=None) -> None:
    """Delete a connection that no workspace uses; 409 (Conflict) listing the bindings if any."""
    current = Connection.objects.select_for_update().get(pk=connection.pk)
    dependents = connection_dependents(connection=current)
    if dependents:
        raise Conflict(
            f"Connection {current.name!r} is used by {len(dependents)} workspace binding(s): "
            "move or remove them first (see move-bindings).",
            code="connection_in_use",
            extra={"bindings": dependents},
        )
    target = ("connection", str(current.pk), current.name)
    try:
        # A savepoint, so that a refused delete leaves the outer transaction usable.
        with transaction.atomic():
            current.delete()
            audit_record(action="connection.delete", target=target, actor=actor,
                         extra={"provider": current.provider})
            bump_connections(target[1])
    except (ProtectedError, RestrictedError) as exc:
        # Something else protects it (a row added since the check above, or a model that
        # connection_dependents does not know yet): refuse as a conflict, not a 500.
        blockers = (exc.protected_objects if isinstance(exc, ProtectedError)
                    else exc.restricted_objects)
        kinds = sorted({str(obj._meta.verbose_name_plural) for obj in blockers})
        raise Conflict(
            f"Connection {current.name!r} is still used ({', '.join(kinds)}): move or "
            "remove those first.",
            code="connection_in_use",
            extra={"bindings": connection_dependents(connection=current)},
        ) from exc


@transaction.atomic
def connection_set_default(*, connection: Connection, actor=None) -> Connection:
    """Make a connection the default for its provider; the previous default stops being one."""
    # Lock every connection of the provider so concurrent calls serialize; the partial unique
    # index is the backstop.
    list(Connection.objects.select_for_update().filter(provider=connection.provider)
         .values_list("pk", flat=True))
    current = Connection.objects.get(pk=connection.pk)
    if current.owner_id is not None:
        raise ValidationFailed(
            "A personal connection cannot be its provider's default (defaults serve "
            "workspaces, which use shared connections only).", code="personal_connection",
            fields={"owner": ["Personal connection."]})
    if not current.is_active:
        raise ValidationFailed(
            "An inactive connection cannot be the default: activate it first.",
            fields={"is_active": ["Must be active to be the default."]},
        )
    if current.is_default:
        audit_record(action="connection.set_default", target=current, actor=actor,
                     extra={"unchanged": True})
        return current
    previous_rows = list(Connection.objects.filter(provider=current.provider, is_default=True)
                         .exclude(pk=current.pk).values_list("pk", "name"))
    previous = [name for _, name in previous_rows]
    Connection.objects.filter(provider=current.provider, is_default=True).exclude(
        pk=current.pk).update(is_default=False)
    try:
        with transaction.atomic():
            Connection.objects.filter(pk=current.pk).update(
                is_default=True, revision=current.revision + 1, updated_by=actor)
    except IntegrityError as exc:
        raise Conflict(
            "Another connection became the default at the same moment; try again.",
            code="default_conflict",
        ) from exc
    current.refresh_from_db()
    audit_record(action="connection.set_default", target=current, actor=actor,
                 changed_fields=["is_default"], extra={"previous_default": previous})
    # What resolved through the provider's default now resolves elsewhere: both scopes.
    bump_connections(current.pk, *[pk for pk, _ in previous_rows])
    return current


@transaction.atomic
def connection_create_from_preset(
    *,
    preset: str,
    name: str,
    credentials: dict | None = None,
    auth_method: str | None = _UNSET,
    base_url: str | None = _UNSET,
    default_model: str | None = _UNSET,
    config: dict | None = _UNSET,
    is_active: bool = True,
    owner=None,
    actor=None,
) -> Connection:
    """Create a connection from a catalog preset; settings given override the preset's."""
    try:
        spec = get_preset(preset)
    except KeyError:
        names = ", ".join(p.name for p in all_presets())
        raise ValidationFailed(
            f"Unknown preset {preset!r}: use one of {names} (GET /api/v1/presets/).",
            code="unknown_preset",
            fields={"preset": [f"Unknown preset; one of: {names}."]},
        ) from None
    return connection_create(
        name=name,
        provider=spec.provider,
        # The preset's own method (or its provider's first) unless the caller names another.
        auth_method=spec.as_dict()["auth_method"] if auth_method in (_UNSET, None, "")
        else auth_method,
        base_url=spec.base_url if base_url is _UNSET else base_url,
        default_model=spec.default_model if default_model is _UNSET else (default_model or ""),
        config=dict(spec.config) if config is _UNSET else config,
        credentials=credentials,
        is_active=is_active,
        owner=owner,
        actor=actor,
    )


@transaction.atomic
def connection_move_bindings(*, source: Connection, target: Connection, actor=None) -> dict:
    """Move every use of `source` (workspace bindings, fallbacks, system defaults: whatever the
    apps using connections registered in connections.dependents) to `target`, all at once.

    The connections themselves are not changed. Returns counts and the slugs of the workspaces
    whose own bindings moved.
    """
    if source.pk == target.pk:
        raise ValidationFailed(
            "A connection's bindings cannot be moved to itself: choose another connection.",
            fields={"to": ["Must be another connection."]},
        )
    # Lock both rows in a fixed order, so two opposite moves cannot deadlock.
    locked = {c.pk: c for c in Connection.objects.select_for_update()
              .filter(pk__in=[source.pk, target.pk]).order_by("pk")}
    if source.pk not in locked:
        raise NotFound("The connection to move bindings from no longer exists.")
    if target.pk not in locked:
        raise ValidationFailed(
            "The target connection does not exist.", fields={"to": ["No such connection."]}
        )
    target = locked[target.pk]
    if target.owner_id is not None:
        raise ValidationFailed(
            f"Connection {target.name!r} is a personal connection: bindings move only to shared "
            "connections.", code="personal_connection",
            fields={"to": ["Personal connection."]})
    if not target.is_active:
        raise ValidationFailed(
            f"Connection {target.name!r} is inactive: activate it before moving bindings to it.",
            fields={"to": ["Must be an active connection."]},
        )
    moved = dependents.move(source=locked[source.pk], target=target, actor=actor)
    counts = {k: moved.get(f"moved_{k}", 0) for k in ("bindings", "system_defaults", "fallbacks")}
    audit_record(
        action="connection.move_bindings", target=locked[source.pk], actor=actor,
        changed_fields=["bindings"] + (["system_defaults"] if counts["system_defaults"] else []),
        extra={"to": str(target.pk), "to_name": target.name, **counts},
    )
    bump_connections(source.pk)
    return {"moved_bindings": counts["bindings"],
            "moved_system_defaults": counts["system_defaults"],
            "moved_fallbacks": counts["fallbacks"],
            "workspaces": moved.get("workspaces", []), "to": target.pk}
