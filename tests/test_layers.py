"""Layers point one way: providers <- connections <- workspaces (audit beside them).

The connections app learns where connections are used, their admin pages and who binds them
through connections.dependents (the workspaces app registers there), leaves system defaults to
the workspaces app (config transfer, env import) and tells caches of a change through
llmconn.versions, so it needs nothing from workspaces. This test fails on any upward import,
deferred ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def test_connections_imports_nothing_from_workspaces():
    assert _upward("connections", ("workspaces",)) == set()


def test_providers_import_neither_connections_nor_workspaces():
    assert _upward("providers", ("connections", "workspaces")) == set()
