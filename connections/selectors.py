"""Reads of connections: querysets the API, admin and commands share."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Connection


def connection_list(*, active_only: bool = False) -> QuerySet[Connection]:
    """All connections, by name."""
    qs = Connection.objects.all()
    if active_only:
        qs = qs.filter(is_active=True)
    return qs.order_by("name")


def connection_get(*, connection_id) -> Connection:
    """One connection by id (Connection.DoesNotExist if missing)."""
    return Connection.objects.get(pk=connection_id)


def connection_dependents(*, connection: Connection) -> list[dict]:
    """The workspace bindings that use a connection: [{"workspace", "role", ...}].

    The single place connections ask where they are used.
    """
    from workspaces.selectors import bindings_using_connection

    return bindings_using_connection(connection=connection)
