"""Export and import of the whole configuration, without secrets: shared connections (settings,
gateway prices and timeouts, default params, fingerprints of their secrets), system defaults,
workspaces with their bindings, fallbacks and default params, and budgets.

`config_export()` is connections.transfer's export plus `system_defaults`, `workspaces` and
`budgets`, by name (connections by name and id, workspaces by slug). `config_import(data,
dry_run=...)` creates what is missing and brings what exists in line with the file, in one
transaction (connections.transfer's import, then the rest here); a dry run reports the same
lines (the diff) and rolls everything back. Importing the same file twice changes nothing.
Secrets are never in the file: a connection that needs them is created inactive (its bindings
and defaults point at it and work once they are entered and it is activated). Personal
connections, user defaults and API keys are not part of it.
"""

from __future__ import annotations


from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import audit_record
from connections.models import Connection
from connections.transfer import ImportReport, connections_export, connections_import
from llmconn.errors import ApplicationError, ValidationFailed

from . import budgets, services
from .models import Budget, Role, SystemDefault, Workspace, WorkspaceBinding
from .resolution import bump_revision

BUDGET_KEYS = ("name", "limit", "warn_threshold", "is_active")


def _text(value) -> str | None:
    return None if value is None else format(Decimal(value).normalize(), "f")


def _binding_row(binding: WorkspaceBinding | None, names: dict) -> dict:
    if binding is None:
        return {"connection": None, "provider": "", "model": None, "fallbacks": [],
                "default_params": {}}
    return {
        "connection": names.get(str(binding.connection_id)) if binding.connection_id else None,
        "provider": binding.provider or "",
        "model": binding.model,
        "fallbacks": [{"connection": names.get(str(f.get("connection")), str(f.get(
            "connection"))), "model": f.get("model")} for f in binding.fallbacks or []],
        "default_params": dict(binding.default_params or {}),
    }


def config_export() -> dict:
    """The whole configuration as a JSON-ready dict, with no secret in it."""
    data = connections_export()
    data["system_defaults"] = [
        {"role": d.role, "connection": d.connection.name, "model": d.model}
        for d in SystemDefault.objects.select_related("connection").order_by("role")
    ]
    names = {str(pk): name for pk, name in
             Connection.objects.filter(owner__isnull=True).values_list("pk", "name")}
    data["workspaces"] = [
        {"name": ws.name, "slug": ws.slug,
         "bindings": {role: _binding_row(found.get(role), names) for role in Role.values}}
        for ws in Workspace.objects.prefetch_related("bindings").order_by("slug")
        for found in [{b.role: b for b in ws.bindings.all()}]
    ]
    data["budgets"] = [
        {"scope": b.scope, "workspace": b.workspace.slug if b.workspace_id else None,
         "connection": b.connection.name if b.connection_id else None,
         "period": b.period, "metric": b.metric, "name": b.name, "limit": _text(b.limit),
         "warn_threshold": _text(b.warn_threshold), "is_active": b.is_active}
        for b in Budget.objects.select_related("workspace", "connection")
        .order_by("scope", "period", "metric", "id")
    ]
    return data


class _DryRun(Exception):
    """Raised inside the import's transaction to roll a dry run back."""


def config_import(*, data, dry_run: bool = False, actor=None) -> ImportReport:
    """Create what the file has and this install lacks, and bring the rest in line."""
    if not isinstance(data, Mapping):
        raise ValidationFailed("Not an llmconn export (expected a JSON object).")
    report: ImportReport | None = None
    try:
        with transaction.atomic():
            report = connections_import(data=data, actor=actor)
            _import_system_defaults(data.get("system_defaults") or [], report, actor)
            _import_workspaces(data.get("workspaces") or [], report, actor)
            _import_budgets(data.get("budgets") or [], report, actor)
            if report.changed:
                bump_revision()
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return report


def _connection(name, *, where: str) -> Connection:
    conn = Connection.objects.filter(name=name, owner__isnull=True).first() \
        if isinstance(name, str) else None
    if conn is None:
        raise ValidationFailed(f"{where}: no shared connection named {name!r}.")
    return conn


def _error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return getattr(exc, "message", str(exc))


def _import_system_defaults(rows, report: ImportReport, actor) -> None:
    for row in rows:
        if not isinstance(row, Mapping) or row.get("role") not in Role.values:
            report.lines.append("error: skipped a system default without a known role")
            report.errors += 1
            continue
        role = row["role"]
        try:
            conn = _connection(row.get("connection"), where=f"system default {role}")
            model = services._clean_model(row.get("model"), where="model")
        except ApplicationError as exc:
            report.lines.append(f"error: {exc.message}")
            report.errors += 1
            continue
        current = SystemDefault.objects.filter(role=role).first()
        if current is not None and current.connection_id == conn.pk and current.model == model:
            continue
        # Written directly: the connection may wait for its secrets (inactive) after an import.
        SystemDefault.objects.update_or_create(role=role, defaults={"connection": conn,
                                                                    "model": model})
        audit_record(action="system_default.set", target=("system_default", role, role),
                     actor=actor, changed_fields=["connection", "model"],
                     extra={"connection": str(conn.pk), "model": model, "import": True})
        report.changed = True
        report.lines.append(f"{'updated' if current else 'set'}: system default {role} -> "
                            f"{conn.name}{' / ' + model if model else ''}")


def _wanted_binding(row, *, where: str) -> dict:
    """A binding of the file with connection names turned into ids (checked)."""
    if not isinstance(row, Mapping):
        raise ValidationFailed(f"{where} must be an object.")
    conn = _connection(row["connection"], where=where) if row.get("connection") else None
    provider = services._clean_provider(row.get("provider") or "", where=f"{where}.provider")
    fallbacks = []
    for i, item in enumerate(row.get("fallbacks") or []):
        if not isinstance(item, Mapping):
            raise ValidationFailed(f"{where}.fallbacks[{i}] must be an object.")
        fallbacks.append({"connection": str(_connection(item.get("connection"),
                                                        where=f"{where}.fallbacks[{i}]").pk),
                          "model": services._clean_model(item.get("model"), where=where)})
    return {"connection_id": conn.pk if conn else None, "provider": "" if conn else provider,
            "model": services._clean_model(row.get("model"), where=f"{where}.model"),
            "fallbacks": fallbacks,
            "default_params": services._clean_params(row.get("default_params") or {},
                                                     where=f"{where}.default_params")}


def _import_workspaces(rows, report: ImportReport, actor) -> None:
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("slug"), str):
            report.lines.append("error: skipped a workspace without a slug")
            report.errors += 1
            continue
        slug = row["slug"]
        try:
            with transaction.atomic():
                _import_workspace(row, slug, report, actor)
        except (ApplicationError, ValidationError) as exc:
            report.lines.append(f"error: workspace {slug} not imported: {_error(exc)}")
            report.errors += 1


def _import_workspace(row, slug: str, report: ImportReport, actor) -> None:
    bindings = row.get("bindings") or {}
    if not isinstance(bindings, Mapping) or set(bindings) - set(Role.values):
        raise ValidationFailed("bindings must be an object keyed by role.")
    wanted = {role: _wanted_binding(value, where=f"bindings.{role}")
              for role, value in bindings.items() if value is not None}
    workspace = Workspace.objects.filter(slug=slug).first()
    created = workspace is None
    if created:
        workspace = services.workspace_create(name=row.get("name") or slug, slug=slug,
                                              actor=actor)
    changed = []
    if not created and row.get("name") and workspace.name != row["name"]:
        workspace.name = row["name"]
        workspace.full_clean()
        workspace.save(update_fields=["name", "updated_at"])
        changed.append("name")
    current = {b.role: b for b in workspace.bindings.all()}
    for role in Role.values:
        want = wanted.get(role)
        have = current.get(role)
        if want is None or (not want["connection_id"] and not want["provider"]
                            and not want["model"] and not want["fallbacks"]
                            and not want["default_params"]):
            if have is not None:
                have.delete()
                changed.append(f"bindings.{role}")
            continue
        state = None if have is None else {
            "connection_id": have.connection_id, "provider": have.provider,
            "model": have.model, "fallbacks": list(have.fallbacks or []),
            "default_params": dict(have.default_params or {})}
        if state == want:
            continue
        # Written directly (not workspace_bind): a connection may be waiting for its secrets.
        WorkspaceBinding.objects.update_or_create(workspace=workspace, role=role,
                                                  defaults=want)
        changed.append(f"bindings.{role}")
    if created or changed:
        Workspace.objects.filter(pk=workspace.pk).update(revision=workspace.revision + 1)
        audit_record(action="workspace.import", target=workspace, actor=actor,
                     changed_fields=changed or ["name", "slug"])
        report.changed = True
        report.lines.append(f"created: workspace {slug}" if created else
                            f"updated: workspace {slug} ({', '.join(changed)})")


def _import_budgets(rows, report: ImportReport, actor) -> None:
    for row in rows:
        if not isinstance(row, Mapping):
            report.lines.append("error: skipped a budget that is not an object")
            report.errors += 1
            continue
        label = f"budget {row.get('scope')} {row.get('workspace') or row.get('connection')} " \
                f"{row.get('period')} {row.get('metric')}"
        try:
            with transaction.atomic():
                _import_budget(row, label, report, actor)
        except (ApplicationError, ValidationError, InvalidOperation, TypeError) as exc:
            report.lines.append(f"error: {label} not imported: {_error(exc)}")
            report.errors += 1


def _import_budget(row, label: str, report: ImportReport, actor) -> None:
    scope = row.get("scope")
    workspace = Workspace.objects.filter(slug=str(row.get("workspace"))).first() \
        if scope == "workspace" else None
    connection = _connection(row.get("connection"), where=label) \
        if scope == "connection" else None
    if scope == "workspace" and workspace is None:
        raise ValidationFailed(f"no workspace {row.get('workspace')!r}")
    values = {"name": row.get("name") or "", "limit": Decimal(str(row["limit"])),
              "warn_threshold": None if row.get("warn_threshold") is None
              else Decimal(str(row["warn_threshold"])),
              "is_active": bool(row.get("is_active", True))}
    existing = Budget.objects.filter(scope=scope, workspace=workspace, connection=connection,
                                     period=row.get("period"), metric=row.get("metric")).first()
    if existing is None:
        budgets.budget_create(scope=scope, workspace=workspace, connection=connection,
                               period=row.get("period"), metric=row.get("metric"),
                               actor=actor, **values)
        report.changed = True
        report.lines.append(f"created: {label}")
        return
    changes = {k: v for k, v in values.items() if getattr(existing, k) != v}
    if changes:
        budgets.budget_update(budget=existing, actor=actor, **changes)
        report.changed = True
        report.lines.append(f"updated: {label} ({', '.join(sorted(changes))})")


