"""The admin's user page (staff) with the user's personal connections and defaults, read-only.

A separate module (the connection and workspace admins are elsewhere): it adds two inlines to
whatever ModelAdmin the user model has. Personal connections show metadata only, never config
or credential hints; staff deactivate one through the API (`PATCH {"is_active": false}`), so
that the change goes through the services (audit, revision). Registered from
WorkspacesConfig.ready().
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model

from connections.models import Connection

from .models import UserDefault


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class PersonalConnectionInline(_ReadOnlyInline):
    model = Connection
    fk_name = "owner"
    fields = ("name", "provider", "default_model", "is_active", "status", "last_used_at",
              "created_at")
    readonly_fields = fields
    verbose_name = "personal connection"
    verbose_name_plural = "personal connections (metadata only)"


class UserDefaultInline(_ReadOnlyInline):
    model = UserDefault
    fields = ("role", "connection", "model", "updated_at")
    readonly_fields = fields
    verbose_name_plural = "defaults of this user's personal keys"


def register() -> None:
    """Add the inlines to the user model's admin (once)."""
    User = get_user_model()
    current = admin.site._registry.get(User)
    if current is None or getattr(current, "_llmconn_people", False):
        return
    base = type(current)
    admin.site.unregister(User)
    people_admin = type("PeopleUserAdmin", (base,), {
        "inlines": [*base.inlines, PersonalConnectionInline, UserDefaultInline],
        "_llmconn_people": True,
        "__module__": __name__,
    })
    admin.site.register(User, people_admin)
