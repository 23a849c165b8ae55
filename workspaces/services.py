"""Writes of workspaces: the workspace, its role bindings, members, API keys, system defaults
and usage records (budgets' services are in budgets.py, with their runtime). Every change
bumps the version of the cache scopes it touches
(llmconn.versions: the workspace, a role's system default, a key) so that every
process re-resolves what depends on them on its next call, and nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import slugify

from audit.services import audit_record
from connections.models import Connection
from llmconn.errors import Conflict, NotFound, ValidationFailed
from providers.base import CHAT, EMBEDDINGS

from .constants import (
    API_KEY_PREFIX,
    API_KEY_RANDOM_BYTES,
    API_KEY_SHOWN_PREFIX_LENGTH,
    API_KEY_TOUCH_INTERVAL_SECONDS,
    MAX_CACHED_KEYS,
)
from .models import (
    MemberRole,
    Membership,
    Role,
    SystemDefault,
    UsageRecord,
    UserDefault,
    Workspace,
    WorkspaceAPIKey,
    WorkspaceBinding,
)
from llmconn import versions

from .resolution import personal_scope

ROLES = tuple(Role.values)
_UNSET: Any = object()
BULK_AUDIT_BATCH = 500  # workspaces per audit row of workspace_bulk_create

EMBEDDING_WARNING = (
    "The embedding connection or model changed (from {old} to {new}): vectors stored earlier "
    "were made by another model and are not comparable with new ones; re-embed them."
)


# --- helpers ----------------------------------------------------------------------------------

def hash_api_key(raw_key: str) -> str:
    """SHA-256 of an API key, hex: how keys are stored and looked up."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _connection_for_binding(value, *, where: str) -> Connection | None:
    """A bindable connection from an id (None stays None); 400 for unknown or inactive ones."""
    if value is None or value == "":
        return None
    if isinstance(value, Connection):
        connection = value
    else:
        try:
            pk = uuid.UUID(str(value))
        except ValueError:
            raise ValidationFailed(f"{where}: {value!r} is not a connection id.",
                                   fields={where: ["Not a valid connection id (UUID)."]}) from None
        connection = Connection.objects.filter(pk=pk).first()
        if connection is None:
            raise ValidationFailed(f"{where}: there is no connection {pk}.",
                                   code="unknown_connection",
                                   fields={where: ["Unknown connection."]})
    if connection.owner_id is not None:
        raise ValidationFailed(
            f"{where}: connection {connection.name!r} is a personal connection: only shared "
            "connections can be bound in workspaces and system defaults.",
            code="personal_connection", fields={where: ["Personal connection."]})
    if not connection.is_active:
        raise ValidationFailed(
            f"{where}: connection {connection.name!r} is inactive and cannot be bound.",
            code="inactive_connection", fields={where: ["Inactive connection."]})
    return connection


def _clean_provider(value, *, where: str) -> str:
    """A provider name of the catalog for a provider-string binding ("" stays "")."""
    from providers.base import find_provider

    if value in (None, ""):
        return ""
    if not isinstance(value, str) or find_provider(value) is None:
        raise ValidationFailed(f"{where}: unknown provider {value!r} (see /api/v1/providers/).",
                               code="unknown_provider", fields={where: ["Unknown provider."]})
    return value


def _clean_params(value, *, where: str) -> dict:
    from providers.default_params import clean_default_params

    try:
        return clean_default_params(value, where=where)
    except ValueError as exc:
        raise ValidationFailed(str(exc), code="invalid_default_params",
                               fields={where: [str(exc)]}) from None


def _check_capability(connection: Connection | None, *, role: str, where: str) -> None:
    """400 when a connection whose provider has no embeddings endpoint is bound to the
    `embedding` role (it would fail on every call, with a confusing message)."""
    from providers.base import EMBEDDINGS, find_provider

    if connection is None or role != Role.EMBEDDING:
        return
    spec = find_provider(connection.provider)
    if spec is not None and EMBEDDINGS not in spec.capabilities:
        raise ValidationFailed(
            f"{where}: connection {connection.name!r} ({spec.label}) has no embeddings endpoint "
            "and cannot be bound to the embedding role.", code="unsupported_endpoint",
            fields={where: ["This provider cannot make embeddings."]})


def _clean_model(value, *, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{where} must be a string or null.",
                               fields={where: ["Must be a string or null."]})
    value = value.strip()
    if len(value) > 200:
        raise ValidationFailed(f"{where} is too long (200 characters at most).",
                               fields={where: ["At most 200 characters."]})
    return value or None


def _clean_fallbacks(value, *, where: str, lookup=None) -> list[dict]:
    """A binding's fallbacks, checked: [{"connection": id, "model": str|None}], at most 5.
    `lookup(value, where=...)`: how a connection is found (default: _connection_for_binding,
    one query each; the bulk path looks in the connections it read at once)."""
    lookup = lookup or _connection_for_binding
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed(f"{where} must be a list.", fields={where: ["Must be a list."]})
    if len(value) > 5:
        raise ValidationFailed(f"{where}: at most 5 fallbacks.", fields={where: ["At most 5."]})
    cleaned = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"connection", "model"}:
            raise ValidationFailed(
                f"{where}[{i}] must be an object {{\"connection\": id, \"model\": str|null}}.",
                fields={where: [f"Item {i}: expected connection and model."]})
        connection = lookup(item.get("connection"), where=f"{where}[{i}].connection")
        if connection is None:
            raise ValidationFailed(f"{where}[{i}].connection is required.",
                                   fields={where: [f"Item {i}: connection required."]})
        cleaned.append({"connection": str(connection.pk),
                        "model": _clean_model(item.get("model"), where=f"{where}[{i}].model")})
    return cleaned


def _effective_embedding(workspace: Workspace) -> tuple[str, str] | None:
    """(connection name, model) the embedding role uses now, or None if nothing."""
    binding = (WorkspaceBinding.objects.select_related("connection")
               .filter(workspace=workspace, role=Role.EMBEDDING).first())
    connection = binding.connection if binding and binding.connection_id else None
    if connection is None and binding is not None and binding.provider:
        connection = Connection.objects.filter(provider=binding.provider, is_default=True,
                                               owner__isnull=True).first()
    model = binding.model if binding else None
    if connection is None:
        default = SystemDefault.objects.select_related("connection").filter(
            role=Role.EMBEDDING).first()
        if default is None:
            return None
        connection = default.connection
        model = model or default.model
    model = model or connection.default_model
    return (connection.name, model or "")


def _describe(embedding: tuple[str, str] | None) -> str:
    if embedding is None:
        return "none"
    name, model = embedding
    return f"{model or '(no model)'} on {name!r}"


def _apply_bindings(*, workspace: Workspace, bindings: dict) -> None:
    """Create or update the given roles' bindings; a role sent as null goes back to default."""
    if not isinstance(bindings, dict):
        raise ValidationFailed("bindings must be an object keyed by role.",
                               fields={"bindings": ["Must be an object."]})
    unknown = sorted(set(bindings) - set(ROLES))
    if unknown:
        raise ValidationFailed(
            f"Unknown role(s) {', '.join(unknown)}: roles are {', '.join(ROLES)}.",
            fields={"bindings": {r: ["Unknown role."] for r in unknown}})
    for role, value in bindings.items():
        where = f"bindings.{role}"
        binding = WorkspaceBinding.objects.select_for_update().filter(
            workspace=workspace, role=role).first() or WorkspaceBinding(workspace=workspace,
                                                                        role=role)
        if value is None:
            value = {"connection": None, "provider": "", "model": None, "fallbacks": [],
                     "default_params": {}}
        if not isinstance(value, dict):
            raise ValidationFailed(f"{where} must be an object or null.",
                                   fields={where: ["Must be an object or null."]})
        extra = set(value) - {"connection", "provider", "model", "fallbacks", "default_params"}
        if extra:
            raise ValidationFailed(f"{where}: unknown field(s) {', '.join(sorted(extra))}.",
                                   fields={where: [f"Unknown: {', '.join(sorted(extra))}."]})
        if value.get("connection") not in (None, "") and value.get("provider") not in (None, ""):
            raise ValidationFailed(
                f"{where}: name a connection or a provider, not both.",
                fields={where: ["Either connection or provider."]})
        if "connection" in value:
            binding.connection = _connection_for_binding(value["connection"],
                                                         where=f"{where}.connection")
            if binding.connection is not None:
                binding.provider = ""
            _check_capability(binding.connection, role=role, where=f"{where}.connection")
        if "provider" in value:
            binding.provider = _clean_provider(value["provider"], where=f"{where}.provider")
            if binding.provider:
                binding.connection = None
        if "default_params" in value:
            binding.default_params = _clean_params(value["default_params"],
                                                   where=f"{where}.default_params")
        if "model" in value:
            binding.model = _clean_model(value["model"], where=f"{where}.model")
        if "fallbacks" in value:
            binding.fallbacks = _clean_fallbacks(value["fallbacks"], where=f"{where}.fallbacks")
            for i, item in enumerate(binding.fallbacks):
                _check_capability(Connection.objects.filter(pk=item["connection"]).first(),
                                  role=role, where=f"{where}.fallbacks[{i}].connection")
        binding.full_clean()
        binding.save()


# --- workspaces -------------------------------------------------------------------------------

@transaction.atomic
def workspace_create(*, name: str, slug: str | None = None, bindings: dict | None = None,
                     actor=None) -> Workspace:
    """Create a workspace (slug from the name if not given), optionally with role bindings."""
    workspace = Workspace(name=(name or "").strip(), slug=(slug or slugify(name or ""))[:100])
    workspace.full_clean()
    try:
        with transaction.atomic():
            workspace.save()
    except IntegrityError as exc:
        raise Conflict("A workspace with this name or slug already exists.",
                       code="workspace_exists") from exc
    if bindings:
        _apply_bindings(workspace=workspace, bindings=bindings)
    audit_record(action="workspace.create", target=workspace, actor=actor,
                 changed_fields=["name", "slug"] + [f"bindings.{r}" for r in bindings or {}])
    versions.bump(versions.workspace(workspace.pk))
    return workspace


@transaction.atomic
def workspace_bulk_create(*, items: list[dict], actor=None) -> list[tuple[Workspace, list[str]]]:
    """Create many workspaces at once, each with its bindings and API keys (operators and
    imports with thousands of workspaces): all or nothing, a handful of queries whatever N.

    `items`: [{"name", "slug" (optional), "bindings" (as workspace_create), "api_keys": [key
    names]}]. Returns [(workspace, [raw keys, shown once])] in order. The same rules as
    workspace_create and api_key_create (audit rows in batches of BULK_AUDIT_BATCH workspaces,
    each listing its workspaces and their keys' ids and prefixes);
    ValidationFailed names the item (`items[i]`) at fault, Conflict a taken name or slug.
    """
    if not isinstance(items, list):
        raise ValidationFailed("items must be a list.", fields={"items": ["Must be a list."]})
    ids = set()
    for item in items:
        for value in ((item or {}).get("bindings") or {}).values():
            if isinstance(value, dict):
                ids.add(value.get("connection"))
                ids.update(f.get("connection") for f in value.get("fallbacks") or []
                           if isinstance(f, dict))
    known = _connections_by_id(ids)
    workspaces, bindings, keys, raws = [], [], [], []
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if not isinstance(item, dict) or set(item) - {"name", "slug", "bindings", "api_keys"}:
            raise ValidationFailed(f"{where} must be an object with name, slug, bindings, "
                                   "api_keys.", fields={where: ["Invalid item."]})
        name = (item.get("name") or "").strip()
        workspace = Workspace(name=name, slug=(item.get("slug") or slugify(name))[:100])
        try:
            workspace.full_clean(validate_unique=False)
        except DjangoValidationError as exc:
            raise ValidationFailed(f"{where}: {'; '.join(exc.messages)}",
                                   fields={where: exc.messages}) from None
        workspaces.append(workspace)
        bindings.append(_bulk_bindings(item.get("bindings") or {}, known, where=where))
        names = item.get("api_keys") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValidationFailed(f"{where}.api_keys must be a list of key names.",
                                   fields={f"{where}.api_keys": ["List of names."]})
        raws.append([API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
                     for _ in names])
        keys.append(names)
    for field in ("name", "slug"):
        values = [getattr(w, field) for w in workspaces]
        taken = set(Workspace.objects.filter(**{f"{field}__in": values})
                    .values_list(field, flat=True))
        if taken or len(set(values)) != len(values):
            raise Conflict(f"A workspace with this {field} already exists (or is repeated): "
                           f"{sorted(taken)[:5] or 'repeated in items'}.",
                           code="workspace_exists")
    try:
        with transaction.atomic():
            Workspace.objects.bulk_create(workspaces)
    except IntegrityError as exc:
        raise Conflict("A workspace with this name or slug already exists.",
                       code="workspace_exists") from exc
    creator = actor if getattr(actor, "is_authenticated", False) else None
    binding_rows, key_rows = [], []
    for workspace, roles, names, raw_keys in zip(workspaces, bindings, keys, raws, strict=True):
        for role, (connection, model, fallbacks) in roles.items():
            binding_rows.append(WorkspaceBinding(workspace=workspace, role=role,
                                                 connection=connection, model=model,
                                                 fallbacks=fallbacks))
        for key_name, raw in zip(names, raw_keys, strict=True):
            key_rows.append(WorkspaceAPIKey(
                workspace=workspace, name=key_name.strip()[:100],
                prefix=raw[:API_KEY_SHOWN_PREFIX_LENGTH], key_hash=hash_api_key(raw),
                created_by=creator))
    WorkspaceBinding.objects.bulk_create(binding_rows, batch_size=2000)
    WorkspaceAPIKey.objects.bulk_create(key_rows, batch_size=2000)
    keys_of: dict[int, list[WorkspaceAPIKey]] = {}
    for key in key_rows:
        keys_of.setdefault(key.workspace_id, []).append(key)
    # Batched audit rows: one per BULK_AUDIT_BATCH workspaces, listing each (id, slug, roles
    # bound, keys by id and prefix: never a key).
    audited = list(zip(workspaces, bindings, strict=True))
    for start in range(0, len(audited), BULK_AUDIT_BATCH):
        batch = audited[start:start + BULK_AUDIT_BATCH]
        audit_record(
            action="workspace.bulk_create", actor=actor,
            target=("workspace", str(batch[0][0].pk), f"{len(batch)} workspaces"),
            changed_fields=["name", "slug", "bindings", "api_keys"],
            extra={"workspaces": [
                {"id": w.pk, "slug": w.slug, "bindings": sorted(roles),
                 "api_keys": [{"key_id": k.pk, "prefix": k.prefix, "name": k.name}
                              for k in keys_of.get(w.pk, [])]}
                for w, roles in batch]})
    versions.bump(*[versions.workspace(w.pk) for w in workspaces],
                  *[versions.key(k.key_hash) for k in key_rows])
    return list(zip(workspaces, raws, strict=True))


def _connections_by_id(ids) -> dict[str, Connection]:
    """{str(id): Connection} of the valid UUIDs among `ids` (one query)."""
    pks = set()
    for value in ids:
        if value in (None, ""):
            continue
        try:
            pks.add(uuid.UUID(str(value)))
        except ValueError:
            continue
    return {str(c.pk): c for c in Connection.objects.filter(pk__in=pks)}


def _bulk_bindings(bindings, known: dict, *, where: str) -> dict:
    """{role: (connection, model, fallbacks)} of one bulk item, checked like _apply_bindings
    (connections looked up in `known`, not one query each)."""
    if not isinstance(bindings, dict) or set(bindings) - set(ROLES):
        raise ValidationFailed(f"{where}.bindings must be an object keyed by role "
                               f"({', '.join(ROLES)}).", fields={f"{where}.bindings": ["Invalid."]})

    def lookup(value, *, where: str):
        if value in (None, ""):
            return None
        found = known.get(str(value))
        if found is None:
            try:
                found = known.get(str(uuid.UUID(str(value))))
            except ValueError:
                pass
        return _connection_for_binding(found if found is not None else value, where=where)

    result = {}
    for role, value in bindings.items():
        at = f"{where}.bindings.{role}"
        if value is None:
            continue
        if not isinstance(value, dict) or set(value) - {"connection", "model", "fallbacks"}:
            raise ValidationFailed(f"{at} must be an object with connection, model, fallbacks.",
                                   fields={at: ["Invalid binding."]})
        connection = lookup(value.get("connection"), where=f"{at}.connection")
        _check_capability(connection, role=role, where=f"{at}.connection")
        fallbacks = _clean_fallbacks(value.get("fallbacks") or [], where=f"{at}.fallbacks",
                                     lookup=lookup)
        for j, item in enumerate(fallbacks):
            _check_capability(known.get(item["connection"]), role=role,
                              where=f"{at}.fallbacks[{j}].connection")
        result[role] = (connection, _clean_model(value.get("model"), where=f"{at}.model"),
                        fallbacks)
    return result


@transaction.atomic
def workspace_update(*, workspace: Workspace, name: str = _UNSET, slug: str = _UNSET,
                     bindings: dict | None = None, actor=None) -> tuple[Workspace, list[str]]:
    """Change a workspace's name, slug or bindings (only the roles sent).

    Returns the workspace and warnings for the caller, e.g. that changing the embedding
    connection or model leaves existing vectors made by another model.
    """
    current = Workspace.objects.select_for_update().get(pk=workspace.pk)
    before = _effective_embedding(current)
    old_name, old_slug = current.name, current.slug
    if name is not _UNSET:
        current.name = (name or "").strip()
    if slug is not _UNSET:
        current.slug = slug or ""
    if bindings:
        _apply_bindings(workspace=current, bindings=bindings)
    current.revision += 1
    current.full_clean()
    try:
        with transaction.atomic():
            current.save()
    except IntegrityError as exc:
        raise Conflict("A workspace with this name or slug already exists.",
                       code="workspace_exists") from exc
    warnings = []
    after = _effective_embedding(current)
    if before is not None and after != before:
        warnings.append(EMBEDDING_WARNING.format(old=_describe(before), new=_describe(after)))
    changed = [f for f, old in (("name", old_name), ("slug", old_slug))
               if getattr(current, f) != old] + [f"bindings.{r}" for r in bindings or {}]
    audit_record(action="workspace.update", target=current, actor=actor, changed_fields=changed,
                 extra={"bindings": bindings} if bindings else None)
    versions.bump(versions.workspace(current.pk))
    return current, warnings


@transaction.atomic
def workspace_delete(*, workspace: Workspace, actor=None) -> None:
    """Delete a workspace with its bindings, members and API keys; its usage records stay
    (workspace NULL, its name kept in `workspace_name`)."""
    target = ("workspace", str(workspace.pk), workspace.slug)
    digests = list(WorkspaceAPIKey.objects.filter(workspace_id=workspace.pk)
                   .values_list("key_hash", flat=True))
    Workspace.objects.filter(pk=workspace.pk).delete()
    audit_record(action="workspace.delete", target=target, actor=actor)
    versions.bump(versions.workspace(workspace.pk), *[versions.key(d) for d in digests])


# --- system defaults --------------------------------------------------------------------------

@transaction.atomic
def system_default_set(*, role: str, connection, model: str | None = None,
                       actor=None) -> tuple[SystemDefault, list[str]]:
    """Set the connection (and optional model) used by workspaces that bind no connection."""
    if role not in ROLES:
        raise NotFound(f"Unknown role {role!r}: roles are {', '.join(ROLES)}.")
    conn = _connection_for_binding(connection, where="connection")
    _check_capability(conn, role=role, where="connection")
    if conn is None:
        raise ValidationFailed("connection is required (delete the default to remove it).",
                               fields={"connection": ["Required."]})
    default = SystemDefault.objects.select_for_update().filter(role=role).first() \
        or SystemDefault(role=role)
    old = (default.connection.name, default.model or default.connection.default_model) \
        if default.pk else None
    default.connection = conn
    default.model = _clean_model(model, where="model")
    default.full_clean()
    default.save()
    warnings = []
    new = (conn.name, default.model or conn.default_model)
    if role == Role.EMBEDDING and old is not None and old != new:
        bound = WorkspaceBinding.objects.filter(
            role=Role.EMBEDDING, connection__isnull=False).values("workspace_id")
        affected = Workspace.objects.exclude(pk__in=bound).count()
        if affected:
            warnings.append(EMBEDDING_WARNING.format(old=_describe(old), new=_describe(new))
                            + f" This affects {affected} workspace(s) using the system default.")
    audit_record(action="system_default.set", target=("system_default", role, role),
                 actor=actor, changed_fields=["connection", "model"],
                 extra={"connection": str(conn.pk), "model": default.model})
    versions.bump(versions.default(role))
    return default, warnings


@transaction.atomic
def system_default_clear(*, role: str, actor=None) -> None:
    """Remove the system default of a role (workspaces without a binding then cannot call it)."""
    if role not in ROLES:
        raise NotFound(f"Unknown role {role!r}: roles are {', '.join(ROLES)}.")
    SystemDefault.objects.filter(role=role).delete()
    audit_record(action="system_default.clear", target=("system_default", role, role),
                 actor=actor)
    versions.bump(versions.default(role))


# --- people: user defaults and personal API keys ----------------------------------------------

def personal_connections_enabled() -> bool:
    """LLMCONN_PERSONAL_CONNECTIONS (default on): users may hold their own connections."""
    from django.conf import settings

    return bool(getattr(settings, "LLMCONN_PERSONAL_CONNECTIONS", True))


def _connection_for_user_default(value, *, user) -> Connection:
    """A connection a user may make their default: shared and active, or their own personal
    one (active). Another user's personal connection is reported as unknown (404-like 400)."""
    try:
        pk = uuid.UUID(str(value))
    except ValueError:
        raise ValidationFailed(f"connection: {value!r} is not a connection id.",
                               fields={"connection": ["Not a valid connection id (UUID)."]}
                               ) from None
    connection = Connection.objects.filter(pk=pk).first()
    if connection is None or (connection.owner_id is not None
                              and connection.owner_id != user.pk):
        raise ValidationFailed(f"connection: there is no connection {pk}.",
                               code="unknown_connection",
                               fields={"connection": ["Unknown connection."]})
    if connection.owner_id is not None and not personal_connections_enabled():
        raise ValidationFailed("Personal connections are turned off on this server.",
                               code="personal_connections_disabled",
                               fields={"connection": ["Personal connections are off."]})
    if not connection.is_active:
        raise ValidationFailed(f"connection: connection {connection.name!r} is inactive.",
                               code="inactive_connection",
                               fields={"connection": ["Inactive connection."]})
    return connection


@transaction.atomic
def user_default_set(*, user, role: str, connection, model: str | None = None,
                     actor=None) -> UserDefault:
    """Set a user's own default connection and model for a role (what their personal API
    keys call first)."""
    if role not in ROLES:
        raise NotFound(f"Unknown role {role!r}: roles are {', '.join(ROLES)}.")
    conn = _connection_for_user_default(connection, user=user)
    default = UserDefault.objects.select_for_update().filter(user=user, role=role).first() \
        or UserDefault(user=user, role=role)
    default.connection = conn
    default.model = _clean_model(model, where="model")
    default.full_clean(validate_unique=False, validate_constraints=False)
    default.save()
    audit_record(action="user_default.set", target=("user", str(user.pk), user.get_username()),
                 actor=actor or user, changed_fields=["connection", "model"],
                 extra={"role": role, "connection": str(conn.pk), "model": default.model})
    versions.bump(versions.workspace(personal_scope(user.pk)))  # that user's keys only
    return default


@transaction.atomic
def user_default_clear(*, user, role: str, actor=None) -> None:
    """Remove a user's default for a role (their keys then use the system default)."""
    if role not in ROLES:
        raise NotFound(f"Unknown role {role!r}: roles are {', '.join(ROLES)}.")
    deleted, _ = UserDefault.objects.filter(user=user, role=role).delete()
    if not deleted:
        raise NotFound(f"You have no default for role {role!r}.")
    audit_record(action="user_default.clear", target=("user", str(user.pk), user.get_username()),
                 actor=actor or user, extra={"role": role})
    versions.bump(versions.workspace(personal_scope(user.pk)))


def personal_keys_stop(*, user_id) -> None:
    """A user was deactivated or is being deleted: every process stops answering their
    personal keys at once (the cached identities depend on each key's scope; the database
    path already refuses an inactive user's keys, and a deleted user's keys go with them)."""
    digests = WorkspaceAPIKey.objects.filter(user_id=user_id, workspace__isnull=True) \
        .values_list("key_hash", flat=True)
    versions.bump(versions.workspace(personal_scope(user_id)),
                  *[versions.key(d) for d in digests])


def _user_saved(sender, instance, created=False, update_fields=None, **_) -> None:
    if not created and not instance.is_active and (
            update_fields is None or "is_active" in update_fields):
        personal_keys_stop(user_id=instance.pk)


def _user_deleted(sender, instance, **_) -> None:
    personal_keys_stop(user_id=instance.pk)


def connect_user_signals() -> None:
    """Deactivating or deleting a user (admin, API, shell: anything that saves the user)
    stops their personal keys in every process (WorkspacesConfig.ready). A queryset
    `.update(is_active=False)` sends no signal: call personal_keys_stop after it."""
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_save, pre_delete

    user_model = get_user_model()
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="llmconn_user_saved")
    pre_delete.connect(_user_deleted, sender=user_model, dispatch_uid="llmconn_user_deleted")


@transaction.atomic
def personal_api_key_create(*, user, name: str = "") -> tuple[WorkspaceAPIKey, str]:
    """Create a user's personal gateway key; returns the row and the key (shown once)."""
    raw = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
    key = WorkspaceAPIKey(
        user=user, name=(name or "").strip()[:100],
        prefix=raw[:API_KEY_SHOWN_PREFIX_LENGTH], key_hash=hash_api_key(raw), created_by=user)
    key.full_clean()
    key.save()
    audit_record(action="user.api_key_create",
                 target=("user", str(user.pk), user.get_username()), actor=user,
                 changed_fields=["api_keys"], extra={"key_id": key.pk, "prefix": key.prefix,
                                                     "name": key.name})
    return key, raw


# --- memberships ------------------------------------------------------------------------------

def _user(user) -> Any:
    User = get_user_model()
    if isinstance(user, User):
        return user
    lookup = Q(username=user) if isinstance(user, str) and not user.isdigit() else Q(pk=user)
    found = User.objects.filter(lookup).first()
    if found is None:
        raise ValidationFailed(f"Unknown user {user!r}.", fields={"user": ["Unknown user."]})
    return found


@transaction.atomic
def membership_set(*, workspace: Workspace, user, role: str = MemberRole.MEMBER,
                   actor=None) -> Membership:
    """Add a user to a workspace, or change their role there."""
    if role not in MemberRole.values:
        raise ValidationFailed(f"role must be one of {', '.join(MemberRole.values)}.",
                               fields={"role": ["Invalid role."]})
    user = _user(user)
    membership = Membership.objects.select_for_update().filter(
        workspace=workspace, user=user).first() or Membership(workspace=workspace, user=user)
    membership.role = role
    membership.full_clean(validate_unique=False)
    membership.save()
    audit_record(action="workspace.member_set", target=workspace, actor=actor,
                 changed_fields=["memberships"], extra={"user": user.username, "role": role})
    return membership


@transaction.atomic
def membership_delete(*, membership: Membership, actor=None) -> None:
    """Remove a user from a workspace."""
    audit_record(action="workspace.member_remove", target=membership.workspace, actor=actor,
                 changed_fields=["memberships"], extra={"user": membership.user.username})
    membership.delete()


# --- API keys ---------------------------------------------------------------------------------

@transaction.atomic
def api_key_create(*, workspace: Workspace, name: str = "", actor=None
                   ) -> tuple[WorkspaceAPIKey, str]:
    """Create a workspace API key; returns the row and the key, which is never shown again."""
    raw = API_KEY_PREFIX + secrets.token_urlsafe(API_KEY_RANDOM_BYTES)
    key = WorkspaceAPIKey(
        workspace=workspace, name=(name or "").strip()[:100],
        prefix=raw[:API_KEY_SHOWN_PREFIX_LENGTH], key_hash=hash_api_key(raw),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    key.full_clean()
    key.save()
    audit_record(action="workspace.api_key_create", target=workspace, actor=actor,
                 changed_fields=["api_keys"], extra={"key_id": key.pk, "prefix": key.prefix,
                                                     "name": key.name})
    versions.bump(versions.key(key.key_hash))  # creates its version: a first call reads it
    return key, raw


@transaction.atomic
def api_key_revoke(*, api_key: WorkspaceAPIKey, actor=None) -> WorkspaceAPIKey:
    """Revoke an API key: refused by the gateway from the next call on, in every process."""
    current = WorkspaceAPIKey.objects.select_for_update().get(pk=api_key.pk)
    if current.revoked_at is None:
        current.revoked_at = timezone.now()
        current.save(update_fields=["revoked_at"])
        target = current.workspace if current.workspace_id else (
            "user", str(current.user_id), current.user.get_username())
        audit_record(action="workspace.api_key_revoke" if current.workspace_id
                     else "user.api_key_revoke", target=target, actor=actor,
                     changed_fields=["api_keys"], extra={"key_id": current.pk,
                                                         "prefix": current.prefix})
    versions.bump(versions.key(current.key_hash))
    return current


_TOUCHED: dict[int, float] = {}


def api_key_touch_due(api_key_id: int) -> bool:
    """Whether a key's last-used time is due to be written (read only: the gateway's warm
    path): at most once per key per minute per process (and the UPDATE itself skips rows
    written in the last minute by other processes)."""
    last = _TOUCHED.get(api_key_id)
    return last is None or time.monotonic() - last >= API_KEY_TOUCH_INTERVAL_SECONDS


def _touch(model, ids) -> None:
    """Set `last_used_at` to now on the rows of `model` with these ids whose time is older than
    API_KEY_TOUCH_INTERVAL_SECONDS (one UPDATE). Outside a transaction on PostgreSQL it commits
    without waiting for the WAL flush: a call (a cold one above all) must not wait for the disk
    for a last-used time; a crash may lose the last fraction of a second of them, nothing else
    (https://www.postgresql.org/docs/current/wal-async-commit.html)."""
    stamp = timezone.now()
    touch = model.objects.filter(pk__in=ids).filter(
        Q(last_used_at__isnull=True)
        | Q(last_used_at__lt=stamp - timedelta(seconds=API_KEY_TOUCH_INTERVAL_SECONDS)))
    conn = transaction.get_connection()
    if conn.vendor == "postgresql" and conn.get_autocommit():
        with transaction.atomic(), conn.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            touch.update(last_used_at=stamp)
    else:
        touch.update(last_used_at=stamp)


_TOUCH_QUEUE: set[int] = set()
_TOUCH_FLUSHED = [0.0]  # monotonic time of the last api_key_touch_flush
TOUCH_FLUSH_INTERVAL_SECONDS = 1.0


def api_key_touch_later(*, api_key_id: int) -> bool:
    """Record that a key was used (no query: usable on the event loop): a key whose
    last-used write is due is queued for `api_key_touch_flush`, which writes every queued key
    in one UPDATE. With thousands of keys called round-robin, one write per key per minute
    was one call in six through the sync path with a commit of its own. Returns True when the
    key was queued."""
    if not api_key_touch_due(api_key_id):
        return False
    if len(_TOUCHED) > MAX_CACHED_KEYS:
        _TOUCHED.clear()
    _TOUCHED[api_key_id] = time.monotonic()
    _TOUCH_QUEUE.add(api_key_id)
    return True


def api_key_touch_pending() -> bool:
    """Whether keys wait for `api_key_touch_flush`."""
    return bool(_TOUCH_QUEUE)


def api_key_touch_flush(*, if_due: bool = False) -> int:
    """Write the last-used time of the queued keys (one UPDATE, not waiting for the WAL flush);
    returns how many were written. `if_due`: only when the last flush is at least
    TOUCH_FLUSH_INTERVAL_SECONDS old (the sync path: at most one write a second)."""
    now = time.monotonic()
    if if_due and now - _TOUCH_FLUSHED[0] < TOUCH_FLUSH_INTERVAL_SECONDS:
        return 0
    _TOUCH_FLUSHED[0] = now
    ids = list(_TOUCH_QUEUE)
    _TOUCH_QUEUE.difference_update(ids)
    if not ids:
        return 0
    _touch(WorkspaceAPIKey, ids)
    return len(ids)


_CONNECTION_TOUCHED: dict[str, float] = {}


def connection_touch(*, connection_ids) -> None:
    """Record that connections answered calls: `last_used_at`, at most one write per connection
    per API_KEY_TOUCH_INTERVAL_SECONDS per process (and none for rows another process wrote in
    that interval), so a busy connection costs one UPDATE a minute, not one per call."""
    now = time.monotonic()
    due = []
    for cid in {str(c) for c in connection_ids if c}:
        last = _CONNECTION_TOUCHED.get(cid)
        if last is None or now - last >= API_KEY_TOUCH_INTERVAL_SECONDS:
            due.append(cid)
    if not due:
        return
    if len(_CONNECTION_TOUCHED) > 10000:
        _CONNECTION_TOUCHED.clear()
    for cid in due:
        _CONNECTION_TOUCHED[cid] = now
    _touch(Connection, due)


# --- usage ------------------------------------------------------------------------------------

def usage_record_create(*, workspace_id: int | None, connection_id: str | None,
                        api_key_id: int | None, role: str, model: str, endpoint: str,
                        stream: bool, status_code: int, error_class: str = "",
                        input_tokens: int = 0, output_tokens: int = 0,
                        cost: Decimal | float | None = None, latency_ms: int = 0,
                        attempt: int = 1, user_id: int | None = None,
                        workspace_name: str = "", connection_name: str = "",
                        request_id: str | None = None, created_at: datetime | None = None,
                        usage_source: str = "provider") -> UsageRecord | None:
    """Record one call made through a workspace or a personal key (for usage reports and
    budgets).

    The workspace, connection, key and user a row names may be deleted while the call ran:
    their column is left NULL instead of failing, and the names copied in keep the row
    readable (usage outlives the workspaces and connections it was made through).
    """
    return usage_records_create(rows=[dict(
        workspace_id=workspace_id, connection_id=connection_id, api_key_id=api_key_id,
        role=role, model=model, endpoint=endpoint, stream=stream, status_code=status_code,
        error_class=error_class, input_tokens=input_tokens, output_tokens=output_tokens,
        cost=cost, latency_ms=latency_ms, attempt=attempt, user_id=user_id,
        workspace_name=workspace_name, connection_name=connection_name, request_id=request_id,
        created_at=created_at, usage_source=usage_source)])[0]


def usage_records_create(*, rows: list[dict], replay: bool = False) -> list[UsageRecord | None]:
    """Record several calls at once (one INSERT): the gateway's batches (workspaces/calls.py)
    and the spool's replays (workspaces/usage_spool.py).

    Each row takes `usage_record_create`'s keyword arguments; the result has, in order, the
    record, or None for a replayed row already written. With `replay` a row whose request id
    and attempt are already written is left out (ON CONFLICT DO NOTHING): a row written again
    from the spool counts once.

    Outside a caller's transaction the rows go through the `usage` database alias (PostgreSQL:
    commits without waiting for the WAL flush, llmconn/settings.py): `bulk_create` (one INSERT
    in a transaction), or for a row alone `save()` (one INSERT in autocommit), committed when
    this returns. Inside a caller's transaction they are written in it, on its
    connection, and commit with it as that transaction would anyway. Database errors other
    than the integrity cases above are raised (the caller spools the rows).
    """
    records = [_usage_record(**row) for row in rows]
    default = transaction.get_connection()
    if default.in_atomic_block:
        # Checked first: foreign keys are checked at commit, which is the caller's.
        kept = _usage_checked(records, alias=default.alias, replay=replay)
        with transaction.atomic(using=default.alias):
            UsageRecord.objects.using(default.alias).bulk_create(
                [r for r in kept if r is not None], ignore_conflicts=replay)
        return kept
    alias = USAGE_DB_ALIAS if USAGE_DB_ALIAS in connections.databases else default.alias
    manager = UsageRecord.objects.using(alias)
    try:
        if len(records) == 1 and not replay:
            # One INSERT in autocommit, one round trip: save() opens no transaction for a
            # model without parents, where bulk_create wraps its INSERT in BEGIN ... COMMIT
            # (measured: bench/usage_writes.py). Most rows are written alone at low load.
            records[0].save(using=alias, force_insert=True)
        else:
            manager.bulk_create(records, ignore_conflicts=replay)
        return records
    except IntegrityError:  # rare: a row deleted while the call ran, a request id used again
        kept = _usage_checked(records, alias=alias, replay=replay)
        manager.bulk_create([r for r in kept if r is not None], ignore_conflicts=replay)
        return kept


def _usage_record(*, workspace_id: int | None, connection_id: str | None,
                  api_key_id: int | None, role: str, model: str, endpoint: str, stream: bool,
                  status_code: int, error_class: str = "", input_tokens: int = 0,
                  output_tokens: int = 0, cost: Decimal | float | str | None = None,
                  latency_ms: int = 0, attempt: int = 1, user_id: int | None = None,
                  workspace_name: str = "", connection_name: str = "",
                  request_id: str | None = None, created_at: datetime | str | None = None,
                  usage_source: str = "provider") -> UsageRecord:
    """The unsaved UsageRecord of one call (values clamped)."""
    if isinstance(created_at, str):
        created_at = datetime.fromisoformat(created_at)
    return UsageRecord(
        workspace_id=workspace_id if workspace_id and workspace_id > 0 else None,
        connection_id=connection_id or None,
        api_key_id=api_key_id or None, user_id=user_id or None,
        workspace_name=(workspace_name or "")[:100],
        connection_name=(connection_name or "")[:100],
        role=role or "", model=(model or "")[:200], endpoint=endpoint, stream=stream,
        status_code=status_code, error_class=(error_class or "")[:32],
        input_tokens=max(0, int(input_tokens or 0)), output_tokens=max(0, int(output_tokens or 0)),
        cost=None if cost is None else Decimal(str(cost)).quantize(Decimal("0.00000001")),
        latency_ms=max(0, int(latency_ms)), attempt=max(1, min(int(attempt), 100)),
        request_id=(request_id or None) and request_id[:REQUEST_ID_MAX],
        created_at=created_at or timezone.now(),
        usage_source="estimated" if usage_source == "estimated" else "provider",
    )


USAGE_DB_ALIAS = "usage"
REQUEST_ID_MAX = 128  # tracing keeps client ids up to 128 characters; 160 leaves room below


def _usage_checked(records: list[UsageRecord], *, alias: str,
                   replay: bool) -> list[UsageRecord | None]:
    """The records with references to deleted rows cleared (the copied names keep them
    readable) and request ids that are already taken resolved: on a replay the row was
    written (None); on a first write a client sent the same x-request-id again, and the row
    gets a suffix (it is a call of its own and is counted)."""
    def existing(model, ids):
        ids = {i for i in ids if i is not None}
        return {str(pk) for pk in model.objects.using(alias).filter(pk__in=ids)
                .values_list("pk", flat=True)} if ids else set()

    workspaces = existing(Workspace, [r.workspace_id for r in records])
    conns = existing(Connection, [r.connection_id for r in records])
    keys = existing(WorkspaceAPIKey, [r.api_key_id for r in records])
    users = existing(get_user_model(), [r.user_id for r in records])
    rids = {r.request_id for r in records if r.request_id}
    taken = set(UsageRecord.objects.using(alias).filter(request_id__in=rids)
                .values_list("request_id", "attempt")) if rids else set()
    kept: list[UsageRecord | None] = []
    for record in records:
        if record.workspace_id is not None and str(record.workspace_id) not in workspaces:
            record.workspace_id = None
        if record.connection_id is not None and str(record.connection_id) not in conns:
            record.connection_id = None
        if record.api_key_id is not None and str(record.api_key_id) not in keys:
            record.api_key_id = None
        if record.user_id is not None and str(record.user_id) not in users:
            record.user_id = None
        pair = (record.request_id, record.attempt)
        if record.request_id and pair in taken:
            if replay:
                kept.append(None)
                continue
            record.request_id = f"{record.request_id}.{uuid.uuid4().hex[:12]}"
        taken.add((record.request_id, record.attempt))
        kept.append(record)
    return kept


# --- connections ------------------------------------------------------------------------------

# --- connections used by workspaces (registered in connections.dependents) -------------------

# Which catalog capability a workspace role needs from the connection it is bound to.
_ROLE_CAPABILITY = {"chat": CHAT, "agent": CHAT, "embedding": EMBEDDINGS}


@dataclass(frozen=True)
class _Moved:
    pk: int
    workspace_id: int
    role: str


def bindings_move(*, source: Connection, target: Connection, actor=None) -> dict:
    """Move every workspace binding, fallback and system default of `source` to `target`
    (connections.services.connection_move_bindings, which locked both connections and audits
    the move, calls this through connections.dependents).

    Bumps the `revision` of every workspace whose resolution changes (all of them when a
    system default moves). A few statements whatever the number of bindings.
    """
    from .selectors import bindings_with_fallback

    # (pk, workspace id, role) rows, not model instances: there may be tens of thousands
    bindings = [_Moved(*row) for row in WorkspaceBinding.objects.select_for_update()
                .filter(connection_id=source.pk).values_list("pk", "workspace_id", "role")]
    defaults = list(SystemDefault.objects.select_for_update().filter(connection_id=source.pk))
    with_fallback = bindings_with_fallback(connection_id=source.pk)
    list(WorkspaceBinding.objects.select_for_update()
         .filter(pk__in=[b.pk for b in with_fallback]).values_list("pk", flat=True))

    spec = target.spec
    capabilities = spec.capabilities if spec else frozenset()
    missing = sorted({row.role for row in [*bindings, *defaults, *with_fallback]
                      if _ROLE_CAPABILITY.get(row.role, CHAT) not in capabilities})
    if missing:
        raise ValidationFailed(
            f"Connection {target.name!r} cannot serve the role(s) {', '.join(missing)} "
            f"(its provider offers: {', '.join(sorted(capabilities)) or 'nothing'}).",
            code="capability_missing",
            fields={"to": [f"Cannot serve: {', '.join(missing)}."]},
        )

    now = timezone.now()
    WorkspaceBinding.objects.filter(connection_id=source.pk).update(
        connection_id=target.pk, updated_at=now)
    SystemDefault.objects.filter(pk__in=[d.pk for d in defaults]).update(
        connection_id=target.pk, updated_at=now)
    moved_ids = {b.pk for b in bindings}
    for binding in with_fallback:
        primary = target.pk if binding.pk in moved_ids else binding.connection_id
        binding.fallbacks = _moved_fallbacks(binding.fallbacks, source=source.pk,
                                             target=target.pk, primary=primary,
                                             primary_model=binding.model)
        binding.updated_at = now
    WorkspaceBinding.objects.bulk_update(with_fallback, ["fallbacks", "updated_at"],
                                         batch_size=500)
    # Workspaces that bind a role to no connection resolve through the system defaults, so a
    # moved default can change any of them.
    workspace_ids = {b.workspace_id for b in [*bindings, *with_fallback]}
    affected = Workspace.objects.all() if defaults else Workspace.objects.filter(
        pk__in=workspace_ids)
    affected.update(revision=F("revision") + 1, updated_at=now)
    slugs = sorted(Workspace.objects.filter(pk__in=workspace_ids)
                   .values_list("slug", flat=True))
    return {"moved_bindings": len(bindings), "moved_system_defaults": len(defaults),
            "moved_fallbacks": len(with_fallback), "workspaces": slugs}


def _moved_fallbacks(fallbacks, *, source, target, primary, primary_model) -> list[dict]:
    """A binding's fallbacks with `source` replaced by `target`; an entry that now repeats the
    binding's own connection and model, or an earlier entry, is dropped."""
    result, seen = [], {(str(primary), primary_model or None)}
    for item in fallbacks or []:
        connection = str(target) if str(item.get("connection")) == str(source) \
            else str(item.get("connection"))
        entry = {"connection": connection, "model": item.get("model")}
        if (connection, entry["model"] or None) in seen:
            continue
        seen.add((connection, entry["model"] or None))
        result.append(entry)
    return result
