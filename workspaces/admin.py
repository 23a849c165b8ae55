"""Django admin for workspaces: name and slug, a binding per role (a connection, a model
chooser filled from its discovered models or a discovery run from the page, free text allowed,
and its fallbacks), what each role resolves to now, members, and API keys (a created key is
shown once, then only its prefix). Also system defaults (editable) and budgets with their
current spend. The connections admin links the places a connection is used to their pages
here (`dependent_admin_urls`, registered in connections.dependents).

Every change goes through workspaces.services, as in the API (so the revision stamp and the
audit log stay right); the admin never shows an API key's hash.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from connections.models import Connection, DiscoveredModel
from connections.selectors import count_of
from django.utils.formats import date_format
from django.utils.timezone import localtime
from llmconn.admin_support import (
    SERVICE_ERROR_ATTR,
    AuditHistoryMixin,
    DatalistInput,
    JSONObjectField,
    ServiceAdminMixin,
    ServiceFormMixin,
    ServiceRefused,
    StaffOnlyAdminMixin,
    badge,
    error_message,
)
from llmconn.errors import ApplicationError

from . import budgets as budget_counters
from . import services
from .models import (
    Budget,
    MemberRole,
    Membership,
    Role,
    SystemDefault,
    UsageRecord,
    Workspace,
    WorkspaceAPIKey,
)
from .selectors import resolved_roles

CSS = "connections/admin.css"
ROLES = tuple(Role.values)
SOURCES = {"binding": "binding", "provider_default": "binding: the provider's default",
           "system_default": "system default"}
MAX_MODEL_OPTIONS = 500


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def dependent_admin_urls(rows: list[dict]) -> list[str]:
    """The admin page of each place that uses a connection (rows of
    selectors.bindings_using_connection): its workspace, else the system defaults."""
    slugs = {row["workspace"] for row in rows if row.get("workspace")}
    pks = dict(Workspace.objects.filter(slug__in=slugs).values_list("slug", "pk")) if slugs else {}
    return [reverse("admin:workspaces_workspace_change", args=[pks[row["workspace"]]])
            if row.get("workspace") in pks else reverse("admin:workspaces_systemdefault_changelist")
            for row in rows]


def _connection_label(connection: Connection) -> str:
    spec = connection.spec
    label = f"{connection.name} ({spec.label if spec else connection.provider})"
    return label if connection.is_active else f"{label}, inactive"


def _models_by_connection(connection_ids) -> dict[str, list[str]]:
    """Discovered model names per connection id, in one query."""
    found: dict[str, list[str]] = {}
    rows = (DiscoveredModel.objects.filter(connection_id__in=list(connection_ids))
            .order_by("connection_id", "model_id").values_list("connection_id", "model_id"))
    for connection_id, model_id in rows:
        names = found.setdefault(str(connection_id), [])
        if len(names) < MAX_MODEL_OPTIONS:
            names.append(model_id)
    return found


class ConnectionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return _connection_label(obj)


PROVIDER = "provider:"


def _provider_defaults() -> dict[str, Connection]:
    """Each provider's default connection (the one marked by set-default), by provider name."""
    return {c.provider: c for c in Connection.objects.filter(is_default=True,
                                                             owner__isnull=True)
            .only("id", "name", "provider", "is_active", "default_model")}


def binding_target_choices(connections, empty_label: str, role: str) -> list:
    """A role's choices: the system default (""), each catalog provider's default connection
    ("provider:NAME", a provider-string binding) and each shared connection (its id)."""
    from providers.base import EMBEDDINGS, all_providers

    defaults = _provider_defaults()
    providers = []
    for spec in all_providers():
        if role == Role.EMBEDDING and EMBEDDINGS not in spec.capabilities:
            continue
        default = defaults.get(spec.name)
        now = f"now: {default.name}" if default else "none set yet"
        providers.append((PROVIDER + spec.name, f"{spec.label}'s default connection ({now})"))
    return [("", empty_label),
            ("Connections", [(str(c.pk), _connection_label(c)) for c in connections]),
            ("A provider's default connection (follows set-default)", providers)]


class WorkspaceAdminForm(ServiceFormMixin, forms.ModelForm):
    """Name, slug and one (connection, model) pair per role; saved by workspaces.services."""

    name = forms.CharField(max_length=100)
    slug = forms.SlugField(max_length=100, required=False,
                           help_text="Empty: made from the name. Used in API URLs.")

    class Meta:
        model = Workspace
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.current = {}
        if self.instance.pk:
            self.current = {b.role: b for b in self.instance.bindings.select_related("connection")}
            if not self.is_bound:
                self.initial.update({"name": self.instance.name, "slug": self.instance.slug})
        bound_ids = [b.connection_id for b in self.current.values() if b.connection_id]
        # Personal connections are never bindable (the service refuses them): not offered.
        connections = list(Connection.objects.filter(Q(is_active=True, owner__isnull=True)
                                                     | Q(pk__in=bound_ids))
                           .only("id", "name", "provider", "is_active", "default_model")
                           .order_by("name"))
        self.connection_ids = {str(c.pk) for c in connections}
        provider_defaults = _provider_defaults()
        defaults = {d.role: d for d in SystemDefault.objects.select_related("connection")
                    .only("role", "model", "connection__id", "connection__name",
                          "connection__provider", "connection__is_active",
                          "connection__default_model")}
        initial_ids = {role: (str(b.connection_id) if b.connection_id else
                              (str(provider_defaults[b.provider].pk)
                               if b.provider in provider_defaults else None))
                       for role, b in self.current.items()}
        wanted = {i for i in initial_ids.values() if i} | {str(d.connection_id) for d in defaults.values()}
        options = _models_by_connection(wanted)
        for role in ROLES:
            binding = self.current.get(role)
            default = defaults.get(role)
            empty = (f"— system default: {default.connection.name} —" if default
                     else "— system default (none set) —")
            self.fields[f"{role}_connection"] = forms.ChoiceField(
                choices=binding_target_choices(connections, empty, role), required=False,
                label=f"{Role(role).label} connection",
                help_text="A connection, or a provider: that provider's default connection "
                          "(the one marked default), followed when the default changes.")
            chosen = initial_ids.get(role) or (str(default.connection_id) if default else None)
            self.fields[f"{role}_model"] = forms.CharField(
                label=f"{Role(role).label} model", required=False, max_length=200,
                widget=DatalistInput(options.get(chosen or "", []), attrs={
                    "class": "vTextField llmconn-model-input", "data-role": role,
                    "placeholder": "the connection's default model"}))
            self.fields[f"{role}_fallbacks"] = forms.CharField(
                label=f"{Role(role).label} fallbacks", required=False, max_length=4000,
                widget=forms.Textarea(attrs={
                    "rows": 2, "class": "vLargeTextField llmconn-fallbacks", "data-role": role,
                    "placeholder": "backup-connection | model (one per line; model optional)"}),
                help_text="Tried in order when the connection fails with a retryable error "
                          "(at most 5). One per line: a connection name, optionally "
                          "“| model”.")
            self.fields[f"{role}_default_params"] = JSONObjectField(
                label=f"{Role(role).label} default parameters",
                placeholder='none (e.g. {"temperature": 0.2})',
                help_text="Request fields added to every call of this role; they override the "
                          "connection's default parameters, and a request's override them.")
            if binding is not None and not self.is_bound:
                self.initial[f"{role}_connection"] = (
                    str(binding.connection_id) if binding.connection_id
                    else (PROVIDER + binding.provider if binding.provider else ""))
                self.initial[f"{role}_model"] = binding.model or ""
                self.initial[f"{role}_fallbacks"] = self._fallback_text(binding.fallbacks or [])
                self.initial[f"{role}_default_params"] = dict(binding.default_params or {})

    @staticmethod
    def _fallback_text(fallbacks: list[dict]) -> str:
        ids = [f.get("connection") for f in fallbacks]
        names = {str(pk): name for pk, name in
                 Connection.objects.filter(pk__in=[i for i in ids if i])
                 .values_list("pk", "name")}
        return "\n".join(names.get(str(f.get("connection")), str(f.get("connection")))
                         + (f" | {f['model']}" if f.get("model") else "") for f in fallbacks)

    def _parse_fallbacks(self, role: str) -> list[dict] | None:
        """The role's fallbacks as the service takes them; None (and a field error) if a line
        names no known connection."""
        text = self.cleaned_data.get(f"{role}_fallbacks") or ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        names = [line.split("|", 1)[0].strip() for line in lines]
        found = dict(Connection.objects.filter(name__in=names, owner__isnull=True)
                     .values_list("name", "pk"))  # personal ones are never bindable
        parsed, unknown = [], []
        for line, name in zip(lines, names):
            model = line.split("|", 1)[1].strip() if "|" in line else ""
            if name not in found:
                unknown.append(name)
                continue
            parsed.append({"connection": str(found[name]), "model": model or None})
        if unknown:
            self.add_error(f"{role}_fallbacks",
                           f"No connection named {', '.join(repr(n) for n in unknown)}.")
            return None
        return parsed

    def _post_clean(self):
        """Model validation is the services' (their errors come back onto the fields)."""

    def clean(self):
        cleaned = super().clean()
        self.fallbacks = {role: self._parse_fallbacks(role) for role in ROLES}
        self.add_service_errors()
        return cleaned

    def binding_changes(self) -> dict:
        """The roles whose connection or model changed, as workspaces.services expects them
        (never a whole role as null: that would also drop its fallbacks)."""
        changes = {}
        for role in ROLES:
            target = self.cleaned_data.get(f"{role}_connection") or ""
            provider = target[len(PROVIDER):] if target.startswith(PROVIDER) else ""
            connection = None if provider or not target else target
            model = (self.cleaned_data.get(f"{role}_model") or "").strip() or None
            binding = self.current.get(role)
            old = ((str(binding.connection_id) if binding.connection_id else None,
                    binding.provider or "", binding.model or None) if binding
                   else (None, "", None))
            new = (connection, provider, model)
            if new != old:
                changes[role] = {"connection": connection, "model": model}
                if provider or (binding is not None and binding.provider):
                    changes[role]["provider"] = provider  # set, or cleared ("")
            params = self.cleaned_data.get(f"{role}_default_params")
            if params is not None and params != dict((binding.default_params or {})
                                                     if binding else {}):
                changes.setdefault(role, {})["default_params"] = params
            fallbacks = self.fallbacks.get(role)
            old_fallbacks = [{"connection": str(f.get("connection")), "model": f.get("model")}
                             for f in ((binding.fallbacks or []) if binding else [])]
            if fallbacks is not None and fallbacks != old_fallbacks:
                changes.setdefault(role, {})["fallbacks"] = fallbacks
        return changes

    def field_for_error(self, path, message):
        if path in ("name", "slug"):
            return path
        parts = (path or "").split(".")
        if len(parts) >= 2 and parts[0] == "bindings" and parts[1] in ROLES:
            if len(parts) >= 3 and parts[2].startswith("fallbacks"):
                return f"{parts[1]}_fallbacks"
            if len(parts) >= 3 and parts[2] == "default_params":
                return f"{parts[1]}_default_params"
            return f"{parts[1]}_model" if parts[-1] == "model" else f"{parts[1]}_connection"
        return None


@admin.register(Workspace)
class WorkspaceAdmin(AuditHistoryMixin, ServiceAdminMixin, StaffOnlyAdminMixin,
                     admin.ModelAdmin):
    audit_target_type = "workspace"
    form = WorkspaceAdminForm
    list_display = ("name", "slug", "bindings_summary", "members_count", "keys_count",
                    "revision", "updated_at")
    search_fields = ("name", "slug")
    ordering = ("name",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("resolved_display", "history_display", "revision", "created_at",
                       "updated_at")

    class Media:
        css = {"all": (CSS,)}

    def get_queryset(self, request):
        return (Workspace.objects.annotate(
            members_count=count_of(Membership, "workspace"),
            keys_count=count_of(WorkspaceAPIKey, "workspace", revoked_at__isnull=True),
        ).prefetch_related("bindings__connection"))

    @admin.display(description="Bindings")
    def bindings_summary(self, obj: Workspace) -> str:
        found = {b.role: b for b in obj.bindings.all()}
        parts = []
        for role in ROLES:
            b = found.get(role)
            if b and b.connection_id:
                parts.append((role, f"{b.connection.name}{' · ' + b.model if b.model else ''}"))
            elif b and b.provider:
                parts.append((role, f"{b.provider}'s default"
                                    f"{' · ' + b.model if b.model else ''}"))
            else:
                parts.append((role, "system default"))
        return format_html_join(format_html("<br>"), '<span class="llmconn-quiet">{}:</span> {}', parts)

    @admin.display(description="Members", ordering="members_count")
    def members_count(self, obj):
        return obj.members_count

    @admin.display(description="Active keys", ordering="keys_count")
    def keys_count(self, obj):
        return obj.keys_count

    # -- the form --------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        return type("WorkspaceAdminForm", (self.form,), {
            "service_error": getattr(request, SERVICE_ERROR_ATTR, None)})

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "slug"]}),
            ("Bindings", {
                "fields": [row for role in ROLES for row in
                           ((f"{role}_connection", f"{role}_model"), f"{role}_fallbacks",
                            f"{role}_default_params")],
                "classes": ["llmconn-bindings"],
                "description": "Each role uses a connection and a model. No connection: the "
                               "system default for the role. No model: the connection's default "
                               "model. Suggestions are the connection's discovered models "
                               "(“Discover” asks the provider now); any name may be typed. "
                               "Default parameters: a JSON object of request fields.",
            }),
        ]
        if obj is not None:
            fieldsets.append(("Resolved now", {"fields": ["resolved_display"]}))
            fieldsets.append(("History", {"fields": ["history_display", "revision",
                                                     "created_at", "updated_at"]}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def save_form(self, request, form, change):
        data = form.cleaned_data
        bindings = form.binding_changes()
        try:
            if change:
                workspace, warnings = services.workspace_update(
                    workspace=form.instance, name=data["name"], slug=data.get("slug") or "",
                    bindings=bindings or None, actor=request.user)
            else:
                workspace = services.workspace_create(
                    name=data["name"], slug=data.get("slug") or None,
                    bindings=bindings or None, actor=request.user)
                warnings = []
        except (ApplicationError, ValidationError) as exc:
            raise ServiceRefused(exc) from exc
        for warning in warnings:
            messages.warning(request, warning)
        return workspace

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        connections = list(Connection.objects.filter(is_active=True, owner__isnull=True)
                           .only("id", "name", "default_model", "provider", "is_active",
                                 "is_default"))
        models = _models_by_connection(c.pk for c in connections)
        by_target = {str(c.pk): {"models": models.get(str(c.pk), []),
                                 "default_model": c.default_model} for c in connections}
        for c in connections:
            if c.is_default:  # a provider-string binding's suggestions: its default's
                by_target[PROVIDER + c.provider] = {**by_target[str(c.pk)],
                                                    "connection": str(c.pk)}
        context["llmconn_bindings"] = {
            "connections": by_target,
            "urls": {"tests": reverse("v1:connection-tests"),
                     "test_detail": reverse("v1:connection-test-detail",
                                            args=["00000000-0000-0000-0000-000000000000"])},
        }
        if obj is not None:
            context["memberships"] = list(obj.memberships.select_related("user")
                                          .order_by("user__username"))
            context["api_keys"] = list(obj.api_keys.select_related("created_by")
                                       .defer("key_hash").order_by("-created_at"))
            context["member_roles"] = MemberRole.choices
            context["usernames"] = list(get_user_model().objects.filter(is_active=True)
                                        .order_by("username")
                                        .values_list("username", flat=True)[:200])
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- read-only rows ---------------------------------------------------------------------

    @admin.display(description="Resolved")
    def resolved_display(self, obj: Workspace) -> str:
        rows = []
        for role, info in resolved_roles(workspace=obj).items():
            if "error" in info:
                rows.append(format_html(
                    '<tr data-role="{}"><th scope="row">{}</th><td colspan="5">{} {}</td></tr>',
                    role, role, badge("not callable", "failed"), info["error"]["message"]))
            else:
                source = SOURCES.get(info["source"], info["source"])
                params = info.get("default_params") or {}
                rows.append(format_html(
                    '<tr data-role="{}"><th scope="row">{}</th><td>{}</td><td>{}</td>'
                    '<td class="llmconn-resolved-model">{}</td>'
                    '<td class="llmconn-resolved-params"><code>{}</code></td>'
                    '<td class="llmconn-quiet">{}</td></tr>',
                    role, role, info["provider_label"], info["connection_name"],
                    info["model"] or "—", json.dumps(params) if params else "—", source))
        head = format_html('<thead><tr><th scope="col">Role</th><th scope="col">Provider</th>'
                           '<th scope="col">Connection</th><th scope="col">Model</th>'
                           '<th scope="col">Default params</th>'
                           '<th scope="col">From</th></tr></thead>')
        return format_html('<table class="llmconn-table" id="llmconn-resolved">{}<tbody>{}</tbody></table>',
                           head, format_html_join("", "{}", ((r,) for r in rows)))

    def get_deleted_objects(self, objs, request):
        """What deleting removes with each workspace (workspace_delete cascades; the read-only
        admins of keys and usage must not make Django refuse for lack of delete rights)."""
        objs = list(objs)
        summary = []
        for ws in objs:
            counts = [(ws.bindings.count(), "binding(s)"), (ws.memberships.count(), "member(s)"),
                      (ws.api_keys.count(), "API key(s)"), (ws.usage.count(), "usage record(s)")]
            summary.append(f"{ws.name}: " + ", ".join(f"{n} {what}" for n, what in counts))
        return summary, {"workspaces": len(objs)}, set(), []

    def delete_model(self, request, obj):
        services.workspace_delete(workspace=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for workspace in queryset:
            services.workspace_delete(workspace=workspace, actor=request.user)

    # -- members and API keys (their own small forms below the main one) --------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/members/", view(self.member_set_view),
                 name="%s_%s_member_set" % info),
            path("<path:object_id>/members/<int:membership_id>/remove/",
                 view(self.member_remove_view), name="%s_%s_member_remove" % info),
            path("<path:object_id>/api-keys/", view(self.api_key_create_view),
                 name="%s_%s_api_key_create" % info),
            path("<path:object_id>/api-keys/<int:key_id>/revoke/", view(self.api_key_revoke_view),
                 name="%s_%s_api_key_revoke" % info),
        ] + super().get_urls()

    def _workspace_for_post(self, request, object_id) -> Workspace:
        if request.method != "POST":
            raise PermissionDenied
        workspace = self.get_object(request, unquote(object_id))
        if workspace is None or not self.has_change_permission(request, workspace):
            raise PermissionDenied
        return workspace

    def _back(self, workspace: Workspace, anchor: str) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:workspaces_workspace_change", args=[workspace.pk]) + anchor)

    def member_set_view(self, request, object_id):
        workspace = self._workspace_for_post(request, object_id)
        username = (request.POST.get("username") or "").strip()
        role = request.POST.get("role") or MemberRole.MEMBER
        if not username:
            messages.error(request, "Enter the user name of the member to add.")
            return self._back(workspace, "#members")
        try:
            membership = services.membership_set(workspace=workspace, user=username, role=role,
                                                 actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            messages.error(request, error_message(exc))
        else:
            messages.success(request, f"{membership.user.get_username()} is now a {membership.role} "
                                      f"of {workspace.name}.")
        return self._back(workspace, "#members")

    def member_remove_view(self, request, object_id, membership_id):
        workspace = self._workspace_for_post(request, object_id)
        membership = workspace.memberships.select_related("user").filter(pk=membership_id).first()
        if membership is None:
            messages.error(request, "That membership no longer exists.")
        else:
            services.membership_delete(membership=membership, actor=request.user)
            messages.success(request, f"Removed {membership.user.get_username()} from {workspace.name}.")
        return self._back(workspace, "#members")

    def api_key_create_view(self, request, object_id):
        """Create a key and show it on this response only: never stored, logged or redirected."""
        workspace = self._workspace_for_post(request, object_id)
        try:
            key, raw = services.api_key_create(workspace=workspace,
                                               name=request.POST.get("name") or "",
                                               actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            messages.error(request, error_message(exc))
            return self._back(workspace, "#api-keys")
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "subtitle": workspace.name,
            "opts": self.opts,
            "original": workspace,
            "key": key,
            "raw_key": raw,
            "media": self.media,
        }
        response = TemplateResponse(request, "admin/workspaces/workspace/api_key_created.html",
                                    context)
        response["Cache-Control"] = "no-store"
        return response

    def api_key_revoke_view(self, request, object_id, key_id):
        workspace = self._workspace_for_post(request, object_id)
        key = workspace.api_keys.filter(pk=key_id).defer("key_hash").first()
        if key is None:
            messages.error(request, "That API key no longer exists.")
        else:
            services.api_key_revoke(api_key=key, actor=request.user)
            messages.success(request, f"Revoked the key {key.prefix}…; calls with it are refused "
                                      "from now on.")
        return self._back(workspace, "#api-keys")


class SystemDefaultForm(ServiceFormMixin, forms.ModelForm):
    """A role's system default: a connection and an optional model (system_default_set)."""

    role = forms.ChoiceField(choices=Role.choices)
    connection = ConnectionChoiceField(queryset=Connection.objects.none())
    model = forms.CharField(required=False, max_length=200,
                            help_text="Empty: the connection's default model.")

    class Meta:
        model = SystemDefault
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connection"].queryset = (Connection.objects.filter(is_active=True,
                                                                        owner__isnull=True)
                                              .order_by("name"))
        if self.instance.pk:
            self.fields["role"].disabled = True
            self.initial["role"] = self.instance.role  # a disabled field keeps its initial
            if not self.is_bound:
                self.initial.update({"role": self.instance.role,
                                     "connection": self.instance.connection_id,
                                     "model": self.instance.model or ""})

    def _post_clean(self):
        """Validation is the service's."""

    def clean(self):
        cleaned = super().clean()
        self.add_service_errors()
        return cleaned


@admin.register(SystemDefault)
class SystemDefaultAdmin(ServiceAdminMixin, StaffOnlyAdminMixin, admin.ModelAdmin):
    """Per role, what workspaces without a binding use; set and cleared by the services."""

    form = SystemDefaultForm
    list_display = ("role", "connection", "model", "updated")
    list_select_related = ("connection",)
    fields = ("role", "connection", "model")

    @admin.display(description="Updated", ordering="updated_at")
    def updated(self, obj):
        return date_format(localtime(obj.updated_at), "DATETIME_FORMAT")

    def get_form(self, request, obj=None, change=False, **kwargs):
        return type("SystemDefaultForm", (self.form,), {
            "service_error": getattr(request, SERVICE_ERROR_ATTR, None)})

    def has_add_permission(self, request):
        return super().has_add_permission(request) and SystemDefault.objects.count() < len(ROLES)

    def save_form(self, request, form, change):
        data = form.cleaned_data
        role = form.instance.role if change else data["role"]
        if not change and SystemDefault.objects.filter(role=role).exists():
            raise ServiceRefused(ValidationError({"role": "This role has a default: change it."}))
        try:
            default, warnings = services.system_default_set(
                role=role, connection=str(data["connection"].pk), model=data.get("model") or None,
                actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            raise ServiceRefused(exc) from exc
        for warning in warnings:
            messages.warning(request, warning)
        return default

    def delete_model(self, request, obj):
        services.system_default_clear(role=obj.role, actor=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.system_default_clear(role=obj.role, actor=request.user)

    def get_deleted_objects(self, objs, request):
        objs = list(objs)
        return ([f"{o}: workspaces without a {o.role} binding can no longer call it"
                 for o in objs], {"system defaults": len(objs)}, set(), [])


def _amount(value) -> str:
    """A cost or token amount without trailing zeros: "0", "2.5", "0.00031", "1200"."""
    text = format(value, "f") if not isinstance(value, str) else value
    return text.rstrip("0").rstrip(".") if "." in text else text


def budget_spend(budget: Budget) -> dict:
    """This period's spend of a budget from the shared counters (as the gateway counts it)."""
    state = budget_counters._state(budget)
    start, end = state.bounds()
    used = budget_counters.used(state)
    described = state.describe(used, start, end)
    return {"used": _amount(described["used"]), "limit": _amount(described["limit"]),
            "resets_at": end, "percent": min(100, round(100 * used / state.limit_units)),
            "exceeded": used >= state.limit_units}


class BudgetForm(ServiceFormMixin, forms.ModelForm):
    """A budget's settings; the target (scope and workspace or connection) is fixed once made."""

    workspace = forms.ModelChoiceField(queryset=Workspace.objects.order_by("name"),
                                       required=False, to_field_name="slug",
                                       help_text="For scope workspace.")
    connection = ConnectionChoiceField(queryset=Connection.objects.order_by("name"),
                                       required=False, help_text="For scope connection.")

    class Meta:
        model = Budget
        fields = ["name", "scope", "workspace", "connection", "period", "metric", "limit",
                  "warn_threshold", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            for name in ("scope", "workspace", "connection"):
                self.fields[name].disabled = True
            self.initial["workspace"] = self.instance.workspace.slug \
                if self.instance.workspace_id else None

    def _post_clean(self):
        """Validation is the service's."""

    def clean(self):
        cleaned = super().clean()
        self.add_service_errors()
        return cleaned


@admin.register(Budget)
class BudgetAdmin(ServiceAdminMixin, StaffOnlyAdminMixin, admin.ModelAdmin):
    """Budgets with this period's spend; created, changed and deleted by the services."""

    form = BudgetForm
    list_display = ("budget_label", "period", "metric", "limit_display", "spend", "resets",
                    "is_active")
    list_filter = ("scope", "period", "metric", "is_active")
    list_select_related = ("workspace", "connection")
    readonly_fields = ("spend_display",)

    class Media:
        css = {"all": (CSS,)}

    def get_fieldsets(self, request, obj=None):
        fields = ["name", "scope", "workspace", "connection", "period", "metric", "limit",
                  "warn_threshold", "is_active"]
        sets = [(None, {"fields": fields})]
        if obj is not None:
            sets.append(("This period", {"fields": ["spend_display"]}))
        return sets

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type("BudgetForm", (form,), {
            "service_error": getattr(request, SERVICE_ERROR_ATTR, None)})

    @admin.display(description="Budget")
    def budget_label(self, obj: Budget) -> str:
        return obj.label

    @admin.display(description="Limit", ordering="limit")
    def limit_display(self, obj: Budget) -> str:
        return _amount(obj.limit)

    def _spend_html(self, obj: Budget) -> str:
        info = budget_spend(obj)
        kind = "failed" if info["exceeded"] else ("running" if info["percent"] >= 80 else "ok")
        return format_html('{} <span class="llmconn-quiet">of {} ({}%)</span>',
                           badge(str(info["used"]), kind), info["limit"], info["percent"])

    @admin.display(description="Spent this period")
    def spend(self, obj: Budget) -> str:
        return self._spend_html(obj)

    @admin.display(description="Spent this period")
    def spend_display(self, obj: Budget) -> str:
        info = budget_spend(obj)
        return format_html('{} <span class="llmconn-quiet">resets {} (UTC)</span>',
                           self._spend_html(obj),
                           date_format(info["resets_at"], "DATETIME_FORMAT"))

    @admin.display(description="Resets")
    def resets(self, obj: Budget) -> str:
        return date_format(budget_spend(obj)["resets_at"], "DATETIME_FORMAT")

    def save_form(self, request, form, change):
        data = form.cleaned_data
        settings = {k: data.get(k) for k in ("name", "period", "metric", "limit",
                                             "warn_threshold", "is_active")}
        settings["name"] = settings["name"] or ""
        try:
            if change:
                return budget_counters.budget_update(budget=form.instance, actor=request.user,
                                              **settings)
            workspace, connection = data.get("workspace"), data.get("connection")
            return budget_counters.budget_create(
                scope=data.get("scope") or "", workspace=workspace.slug if workspace else None,
                connection=str(connection.pk) if connection else None, actor=request.user,
                **settings)
        except (ApplicationError, ValidationError) as exc:
            raise ServiceRefused(exc) from exc

    def delete_model(self, request, obj):
        budget_counters.budget_delete(budget=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            budget_counters.budget_delete(budget=obj, actor=request.user)


class KeyKindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("workspace", "Workspace keys"), ("personal", "Personal keys")]

    def queryset(self, request, queryset):
        if self.value() in ("workspace", "personal"):
            return queryset.filter(workspace__isnull=self.value() == "personal")
        return queryset


@admin.register(WorkspaceAPIKey)
class WorkspaceAPIKeyAdmin(ReadOnlyAdmin):
    """Workspace keys and personal gateway keys (no workspace: they belong to a user)."""

    list_display = ("prefix", "name", "belongs_to", "created_at", "last_used_at", "revoked_at")
    list_filter = (KeyKindFilter, "workspace")
    list_select_related = ("workspace", "user")
    fields = ("belongs_to", "workspace", "user", "name", "prefix", "created_by", "created_at",
              "last_used_at", "revoked_at")  # never key_hash
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("key_hash")

    @admin.display(description="Belongs to", ordering="workspace__name")
    def belongs_to(self, obj: WorkspaceAPIKey) -> str:
        if obj.workspace_id is not None:
            return f"workspace {obj.workspace.name}"
        if obj.user_id is not None:
            return f"personal key of {obj.user.get_username()}"
        return "—"


def _kept_name(current, kept: str) -> str:
    """A usage row's workspace or connection: its name now, or the name the row kept when it
    was written (the workspace or connection was deleted since)."""
    if current is not None:
        return current.name
    if kept:
        return format_html('{} <span class="llmconn-quiet">(deleted)</span>', kept)
    return "—"


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "workspace_label", "connection_label", "model", "endpoint",
                    "status_code", "input_tokens", "output_tokens", "cost", "latency_ms")
    list_filter = ("workspace", "endpoint", "status_code")
    list_select_related = ("workspace", "connection", "api_key__user")

    @admin.display(description="Workspace", ordering="workspace_name")
    def workspace_label(self, obj: UsageRecord) -> str:
        if obj.workspace_id is None and not obj.workspace_name and obj.api_key_id is not None:
            user = obj.api_key.user
            return f"personal key of {user.get_username()}" if user else "personal key"
        return _kept_name(obj.workspace, obj.workspace_name)

    @admin.display(description="Connection", ordering="connection_name")
    def connection_label(self, obj: UsageRecord) -> str:
        return _kept_name(obj.connection, obj.connection_name)


from . import usage_admin  # noqa: E402,F401  (the usage report page, issue 10)
