"""Finds branches on a provider's name or wire format (`provider == "openai"`, `spec.wire in
(WIRE_OPENAI, ...)`) outside the provider classes. No Django import: run as
`python -m tests.providers.branch_scan` it prints the offenders as JSON (a fresh interpreter:
CPython 3.11.7's ast.parse can fail with "AST constructor recursion depth mismatch" late in a
long test session)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The modules that may name providers and wire formats: the provider classes themselves.
PROVIDER_CLASS_MODULES = {Path("providers/base.py"), Path("providers/catalog.py")}
SCANNED_APPS = ("providers", "connections", "workspaces", "audit", "llmconn")
_NAMES = {"provider", "wire"}
_OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _subject(node: ast.AST) -> str | None:
    """`provider` / `wire` for `provider`, `s.provider`, `spec.wire` ...; else None."""
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in _NAMES:
        return node.attr
    return None


def _literal(node: ast.AST) -> bool:
    """A provider name or wire constant: "openai", WIRE_OPENAI, ("ollama", "vllm")..."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return name.startswith("WIRE_")
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_literal(e) for e in node.elts)
    return False


def provider_branches(source: str) -> list[int]:
    """Line numbers of `provider == "..."`, `wire in (WIRE_...)` and the like in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        if not any(isinstance(op, _OPS) for op in node.ops):
            continue
        if any(_subject(s) for s in sides) and any(_literal(s) for s in sides):
            found.append(node.lineno)
    return found


def offenders() -> list[str]:
    """`path:line` of every provider/wire branch outside PROVIDER_CLASS_MODULES."""
    found = []
    for app in SCANNED_APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel in PROVIDER_CLASS_MODULES or "migrations" in rel.parts:
                continue
            found += [f"{rel}:{line}" for line in provider_branches(path.read_text())]
    return found


if __name__ == "__main__":
    print(json.dumps(offenders()))
