"""Reads of workspaces and their bindings."""

from __future__ import annotations

from .models import SystemDefault, WorkspaceBinding


def bindings_using_connection(*, connection) -> list[dict]:
    """Every place that uses a connection: workspace role bindings and system defaults.

    [{"workspace": slug|None, "workspace_name": str|None, "role": str, "system_default": bool}]
    """
    rows = [
        {"workspace": b.workspace.slug, "workspace_name": b.workspace.name, "role": b.role,
         "system_default": False}
        for b in WorkspaceBinding.objects.filter(connection=connection)
        .select_related("workspace").order_by("workspace__name", "role")
    ]
    rows += [
        {"workspace": None, "workspace_name": None, "role": d.role, "system_default": True}
        for d in SystemDefault.objects.filter(connection=connection).order_by("role")
    ]
    return rows
