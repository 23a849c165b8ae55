"""Read-only admin for the audit log: events can be searched and read, never changed.

Each connection's and workspace's History button lands here filtered to that target
(`?target_type=connection&target_id=<id>`), titled with the target's name.
"""

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from llmconn.admin_support import badge

from .models import AuditEvent, Outcome

# Targets whose admin change page an event can link to: target_type -> admin URL name.
TARGET_PAGES = {
    "connection": "admin:connections_connection_change",
    "workspace": "admin:workspaces_workspace_change",
}


class ActionGroupFilter(admin.SimpleListFilter):
    """Actions by family ("connection.", "workspace." ...), from the events present."""

    title = "action group"
    parameter_name = "action_group"

    def lookups(self, request, model_admin):
        actions = AuditEvent.objects.order_by().values_list("action", flat=True).distinct()
        groups = sorted({a.split(".", 1)[0] for a in actions if "." in a})
        return [(g, g.replace("_", " ")) for g in groups]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(action__startswith=f"{value}.") if value else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Lists and shows events; no add, change or delete."""

    list_display = ("seq", "created_at", "actor_name", "auth_kind", "action", "target_link",
                    "outcome_badge", "ip")
    list_filter = ("outcome", "auth_kind", ActionGroupFilter, "action", "target_type")
    search_fields = ("action", "target_id", "target_name", "actor_name", "ip")
    ordering = ("-seq",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    class Media:
        css = {"all": ("connections/admin.css",)}

    # Staff read the audit log, as in the API (GET /api/v1/audit-events/ is staff-only).
    def has_module_permission(self, request):
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request, obj=None):
        return bool(request.user.is_active and request.user.is_staff)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Target", ordering="target_name")
    def target_link(self, obj: AuditEvent) -> str:
        name = obj.target_name or obj.target_id or "—"
        url_name = TARGET_PAGES.get(obj.target_type)
        if url_name and obj.target_id:
            try:
                url = reverse(url_name, args=[obj.target_id])
            except NoReverseMatch:
                url = ""
            if url:
                return format_html('<span class="llmconn-quiet">{}</span> <a href="{}">{}</a>',
                                   obj.target_type, url, name)
        return format_html('<span class="llmconn-quiet">{}</span> {}', obj.target_type, name)

    @admin.display(description="Outcome", ordering="outcome")
    def outcome_badge(self, obj: AuditEvent) -> str:
        kind = {Outcome.SUCCESS: "ok", Outcome.DENIED: "failed", Outcome.FAILED: "failed"}
        return badge(obj.get_outcome_display(), kind.get(obj.outcome, "muted"))

    def changelist_view(self, request, extra_context=None):
        """Titled "History of <target>" when filtered to one target (the History buttons)."""
        target_type = request.GET.get("target_type")
        target_id = request.GET.get("target_id")
        extra_context = dict(extra_context or {})
        if target_type and target_id:
            name = (AuditEvent.objects.filter(target_type=target_type, target_id=target_id)
                    .order_by("-seq").values_list("target_name", flat=True).first())
            extra_context["title"] = f"History of {target_type} “{name or target_id}”"
        return super().changelist_view(request, extra_context)
