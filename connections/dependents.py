"""Where connections are used, answered by the apps that use them.

Layers point one way (`providers` <- `connections` <- `workspaces`): the connections app does
not import the apps built on it. An app whose rows point at connections registers a `User`
here from its AppConfig.ready(): what lists the places a connection is used (delete refuses
while there are any; the API and admin show them), what counts them for a listing, what
moves them all to another connection (move-bindings), the admin page of each place (the
admin links them), and who binds connections there (such users may read the active shared
connections to pick one: connections.api.permissions). Cached resolutions are told of a change
through the versions of the cache scopes (llmconn.versions), not through this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import IntegerField, Value


@dataclass(frozen=True)
class User:
    """One app's answers (see the module docstring).

    `dependents(connection)` → [{"workspace", "workspace_name", "role", "system_default",
    "fallback"}]; `count()` → an expression counting the uses of the connection `OuterRef("pk")`
    (for annotating a connection listing); `move(source=, target=, actor=)` → counts of what
    moved (runs in the caller's transaction, after the caller locked both connections);
    `admin_urls(rows)` → one admin URL per row of `dependents` ("" for a row it does not
    link); `binds(user=)` → whether the user binds connections in this app.
    """

    name: str
    dependents: Callable[..., list[dict]]
    count: Callable[[], object]
    move: Callable[..., dict] | None = None
    admin_urls: Callable[[list[dict]], list[str]] | None = None
    binds: Callable[..., bool] | None = None


_USERS: dict[str, User] = {}


def register(user: User) -> None:
    """Register (or replace, by name) an app's answers."""
    _USERS[user.name] = user


def dependents(*, connection) -> list[dict]:
    """Every place a connection is used, from every registered app."""
    rows: list[dict] = []
    for user in _USERS.values():
        rows += user.dependents(connection=connection)
    return rows


def with_admin_urls(rows: list[dict]) -> list[dict]:
    """Rows of `dependents` with "url": the admin page of each ("" when no app links it)."""
    rows = [{**row, "url": ""} for row in rows]
    for user in _USERS.values():
        if user.admin_urls is None:
            continue
        for row, url in zip(rows, user.admin_urls(rows), strict=True):
            row["url"] = url or row["url"]
    return rows


def binds(*, user) -> bool:
    """Whether the user binds connections in any registered app (e.g. manages a workspace)."""
    return any(u.binds(user=user) for u in _USERS.values() if u.binds is not None)


def used_by_count():
    """An expression counting every use of the outer connection (0 without registered apps)."""
    total = None
    for user in _USERS.values():
        total = user.count() if total is None else total + user.count()
    return total if total is not None else Value(0, output_field=IntegerField())


def move(*, source, target, actor=None) -> dict:
    """Move every use of `source` to `target` (each registered app's own rows); merged counts."""
    result: dict = {}
    for user in _USERS.values():
        if user.move is None:
            continue
        for key, value in user.move(source=source, target=target, actor=actor).items():
            if isinstance(value, int) and isinstance(result.get(key), int):
                result[key] += value
            elif isinstance(value, list) and isinstance(result.get(key), list):
                result[key] = sorted({*result[key], *value})
            else:
                result[key] = value
    return result
