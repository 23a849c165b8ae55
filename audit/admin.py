"""Read-only admin for the audit log: events can be searched and read, never changed."""

from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Lists and shows events; no add, change or delete."""

    list_display = ("seq", "created_at", "actor_name", "auth_kind", "action", "target_type",
                    "target_name", "outcome", "ip")
    list_filter = ("outcome", "auth_kind", "action", "target_type")
    search_fields = ("action", "target_id", "target_name", "actor_name", "ip")
    ordering = ("-seq",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
