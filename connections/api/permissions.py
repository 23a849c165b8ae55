"""Who may use the connections API: staff for everything; workspace managers may list and
read active connections (without config or credential hints) so that they can bind them."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission


def is_workspace_manager(request) -> bool:
    """True when the user manages at least one workspace (cached on the request)."""
    cached = getattr(request, "_llmconn_is_manager", None)
    if cached is None:
        from workspaces.models import MemberRole, Membership

        cached = Membership.objects.filter(user_id=request.user.pk,
                                           role=MemberRole.MANAGER).exists()
        request._llmconn_is_manager = cached
    return cached


def is_staff(request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_staff)


class IsStaffOrManagerReading(BasePermission):
    """Staff: any action. Workspace managers: the view's `manager_actions`, safe methods only.
    Anyone else: 403 when signed in, 401 when not."""

    message = "Only staff manage connections; workspace managers may only list and read them."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if user.is_staff:
            return True
        return (
            request.method in SAFE_METHODS
            and getattr(view, "action", None) in getattr(view, "manager_actions", ())
            and is_workspace_manager(request)
        )
