"""Django admin for workspaces: read-only views of workspaces, bindings, members, API keys and
usage. Changes go through the API (and so through the services, which keep the revision stamp
and the audit log right); the admin never shows an API key or its hash."""

from __future__ import annotations

from django.contrib import admin

from .models import Membership, SystemDefault, UsageRecord, Workspace, WorkspaceAPIKey, \
    WorkspaceBinding


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BindingInline(admin.TabularInline):
    model = WorkspaceBinding
    fields = ("role", "connection", "model", "fallbacks")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("user", "role", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Workspace)
class WorkspaceAdmin(ReadOnlyAdmin):
    list_display = ("name", "slug", "revision", "updated_at")
    search_fields = ("name", "slug")
    fields = ("name", "slug", "revision", "created_at", "updated_at")
    readonly_fields = fields
    inlines = [BindingInline, MembershipInline]


@admin.register(SystemDefault)
class SystemDefaultAdmin(ReadOnlyAdmin):
    list_display = ("role", "connection", "model", "updated_at")


@admin.register(WorkspaceAPIKey)
class WorkspaceAPIKeyAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "name", "workspace", "created_at", "last_used_at", "revoked_at")
    list_filter = ("workspace",)
    fields = ("workspace", "name", "prefix", "created_by", "created_at", "last_used_at",
              "revoked_at")  # never key_hash
    readonly_fields = fields


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "workspace", "connection", "model", "endpoint", "status_code",
                    "input_tokens", "output_tokens", "cost", "latency_ms")
    list_filter = ("workspace", "endpoint", "status_code")
    list_select_related = ("workspace", "connection")
