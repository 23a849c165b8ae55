"""The admin's user page (staff) with the user's personal connections and defaults, read-only.

A separate module (the connection and workspace admins are elsewhere): it adds two inlines to
whatever ModelAdmin the user model has. Personal connections show metadata only, never config
or credential hints; staff deactivate one from its page in the connections admin (or the API's
`PATCH {"is_active": false}`), through the services (audit, revision). Also the user's
personal gateway keys (prefixes only). Registered from
WorkspacesConfig.ready().
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model

from connections.models import Connection

from .models import UserDefault, WorkspaceAPIKey


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
    show_change_link = True  # its metadata page, with the Deactivate button
    verbose_name_plural = "personal connections (metadata only)"


class UserDefaultInline(_ReadOnlyInline):
    model = UserDefault
    fields = ("role", "connection", "model", "updated_at")
    readonly_fields = fields
    verbose_name_plural = "defaults of this user's personal keys"


class PersonalAPIKeyInline(_ReadOnlyInline):
    model = WorkspaceAPIKey
    fk_name = "user"
    fields = ("prefix", "name", "created_at", "last_used_at", "revoked_at")  # never key_hash
    readonly_fields = fields
    verbose_name = "personal gateway key"
    verbose_name_plural = "personal gateway keys"

    def get_queryset(self, request):
        return super().get_queryset(request).filter(workspace__isnull=True).defer("key_hash")


def register() -> None:
    """Add the inlines to the user model's admin (once)."""
    User = get_user_model()
    current = admin.site._registry.get(User)
    if current is None or getattr(current, "_llmconn_people", False):
        return
    base = type(current)
    admin.site.unregister(User)
    people_admin = type("PeopleUserAdmin", (base,), {
        "inlines": [*base.inlines, PersonalConnectionInline, UserDefaultInline,
                    PersonalAPIKeyInline],
        "_llmconn_people": True,
        "__module__": __name__,
    })
    admin.site.register(User, people_admin)
