"""Who may use the connections API.

Shared connections (no owner): staff manage them; workspace managers may list and read active
ones (without config or credential hints) so that they can bind them. With personal
connections on (LLMCONN_PERSONAL_CONNECTIONS, the default), every signed-in user may also read
the active shared connections that way, and create and manage their own personal connections
(seen in full by them only). Staff see other users' personal connections as metadata and may
only deactivate them; other users never see them (404).
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from connections import dependents


def personal_enabled() -> bool:
    return bool(getattr(settings, "LLMCONN_PERSONAL_CONNECTIONS", True))


def binds_connections(request) -> bool:
    """True when the user binds connections in an app that uses them: manages at least one
    workspace (the workspaces app answers through connections.dependents; cached on the
    request)."""
    cached = getattr(request, "_llmconn_binds", None)
    if cached is None:
        cached = dependents.binds(user=request.user)
        request._llmconn_binds = cached
    return cached


def is_staff(request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_staff)


def sees_in_full(user, connection) -> bool:
    """Config and credential hints: staff for shared connections, the owner for their own."""
    if connection.owner_id is not None:
        return connection.owner_id == getattr(user, "pk", None)
    return bool(getattr(user, "is_staff", False))


def reads_shared(request) -> bool:
    """May list and read active shared connections (without config or hints)."""
    return personal_enabled() or binds_connections(request)


def connection_for_owner_or_staff(request, pk):
    """The connection `pk` for an action on it (test, discover, rotate, roll back...): staff on
    shared connections, the owner on their personal one. Another user's personal connection is
    404 to non-staff (its existence is not disclosed) and 403 to staff."""
    from connections.models import Connection

    connection = Connection.objects.filter(pk=pk).first()
    user = request.user
    if connection is None:
        raise NotFound("No such connection.")
    if connection.owner_id is None:
        if user.is_staff:
            return connection
        raise PermissionDenied("Only staff act on shared connections.")
    if connection.owner_id == user.pk:
        if not personal_enabled():
            raise PermissionDenied("Personal connections are turned off on this server.")
        return connection
    if user.is_staff:
        raise PermissionDenied("This is another user's personal connection: staff may only "
                               "see its metadata and deactivate it.")
    raise NotFound("No such connection.")


class IsAuthenticatedForConnections(BasePermission):
    """Signed in (401 otherwise); the view and connection_for_owner_or_staff decide the rest."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated)


class IsStaffOrManagerReading(BasePermission):
    """Staff: any action. Others: the view's `manager_actions` with safe methods when they may
    read shared connections; the view's `personal_actions` when personal connections are on.
    Anyone else: 403 when signed in, 401 when not."""

    message = "Only staff manage shared connections; other users may read them and manage " \
              "their own personal connections."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if user.is_staff:
            return True
        action = getattr(view, "action", None)
        if personal_enabled() and action in getattr(view, "personal_actions", ()):
            return True
        return (
            request.method in SAFE_METHODS
            and action in getattr(view, "manager_actions", ())
            and reads_shared(request)
        )

    def has_object_permission(self, request, view, obj) -> bool:
        user = request.user
        if obj.owner_id is not None and obj.owner_id == user.pk:
            if not personal_enabled():
                raise PermissionDenied("Personal connections are turned off on this server.")
            return True
        if user.is_staff:
            if obj.owner_id is None or request.method in SAFE_METHODS:
                return True
            # Another user's personal connection: staff may only deactivate it (checked by
            # the view, which knows the body).
            return getattr(view, "action", None) == "partial_update"
        return request.method in SAFE_METHODS and getattr(view, "action", None) in getattr(
            view, "manager_actions", ())
