"""Layers point one way: providers <- connections <- workspaces (audit beside them).

The connections app learns where connections are used through connections.dependents (the
workspaces app registers there) and tells caches of a change through llmconn.versions, so it
needs nothing from workspaces. This test fails on a new upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Upward imports that remain, each to be removed by the work that owns the file (#19): admin
# (#18), configuration import/export and env import (#17), API permissions (workspace members).
KNOWN = {
    "connections/admin.py", "connections/env_import.py", "connections/transfer.py",
    "connections/api/permissions.py",
}


def _upward(package: str, forbidden: tuple[str, ...]) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n == f or n.startswith(f + ".") for n in names for f in forbidden):
                found.add(str(path.relative_to(ROOT)))
    return found


def test_connections_imports_nothing_from_workspaces_beyond_the_known_files():
    assert _upward("connections", ("workspaces",)) <= KNOWN


def test_the_services_selectors_and_jobs_of_connections_import_no_workspaces():
    upward = _upward("connections", ("workspaces",))
    for name in ("services.py", "selectors.py", "diagnostics.py", "rotation.py", "tasks.py"):
        assert f"connections/{name}" not in upward


def test_providers_import_neither_connections_nor_workspaces():
    assert _upward("providers", ("connections", "workspaces")) == set()
