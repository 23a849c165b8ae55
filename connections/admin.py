"""Django admin for connections: the management UI.

- Add: pick a provider or a preset first (cards read from the catalog), then a form with that
  provider's fields; the auth method chooses which of them show (connection_form.js).
- Secrets are password inputs that are never filled in. On edit they say "saved, ends in WXYZ;
  leave blank to keep", and a blank input keeps the stored secret.
- "Test connection" / "Discover models" run the asynchronous checks through the API
  (/api/v1/connection-tests/, /api/v1/connections/{id}/discover-models/) and show the result
  inline; the add form tests the unsaved settings before anything is stored.
- Every save, delete and action calls connections.services / connections.diagnostics, like the
  API; their refusals come back as form errors or messages, never as a 500.
- Another user's personal connection (Connection.owner set) is shown to staff as metadata only,
  by the API's rule (connections.api.permissions.sees_in_full): never its config, credential
  hints, prices or default parameters, and the only change staff may make is to deactivate it.
  Its form is never built; tests, discovery, rotation, moves and deletes refuse it.
"""

from __future__ import annotations

import json
import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.http import urlencode
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
from llmconn.errors import ApplicationError, Conflict
from providers.base import all_presets, all_providers, find_provider

from . import diagnostics, services
from .api.permissions import sees_in_full
from .dependents import with_admin_urls
from .models import Connection, ConnectionStatus, ConnectionTest, ErrorClass, TestStatus
from .selectors import connection_dependents, connection_list_detailed

SECRET = "secret__"
CONFIG = "cfg__"
REMOVE = "remove__"
ROTATE = "rotate__"
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
CSS = "connections/admin.css"


# --- the catalog as form fields ----------------------------------------------------------------

def form_layout(spec) -> dict[str, dict]:
    """The provider's fields as form fields: {form name: {"field", "kind", "methods"}}.

    Provider-level fields belong to every auth method; a method's fields only to that method
    (a field shared by two methods is one input shown for both).
    """
    every = [m.name for m in spec.auth_methods]
    layout: dict[str, dict] = {}
    for field in spec.fields:
        key = (SECRET if field.secret else CONFIG) + field.name
        layout[key] = {"field": field, "kind": "secret" if field.secret else "config",
                       "methods": list(every)}
    for method in spec.auth_methods:
        for field in method.fields:
            key = (SECRET if field.secret else CONFIG) + field.name
            entry = layout.setdefault(key, {"field": field,
                                            "kind": "secret" if field.secret else "config",
                                            "methods": []})
            if method.name not in entry["methods"]:
                entry["methods"].append(method.name)
    return layout


def _secret_help(field, state: dict | None, saved: bool) -> str:
    base = f"{field.help_text} " if field.help_text else ""
    if not saved:
        return base + "Stored encrypted; never shown again."
    if state is None:
        return base + "Not set."
    if state.get("readable") is False:
        return base + "The saved value cannot be decrypted (its key is no longer configured): enter it again."
    if state.get("hint"):
        return base + f"Saved, ends in {state['hint'].lstrip('…')}; leave blank to keep."
    return base + "Saved; leave blank to keep."


class ConnectionAdminForm(ServiceFormMixin, forms.ModelForm):
    """A connection's settings for one provider: the catalog's fields for its auth methods.

    Built per request by ConnectionAdmin.get_form (spec, layout, service error). Model
    validation is left to the services, whose errors come back onto these fields.
    """

    spec = None
    layout: dict = {}
    model_options: tuple = ()

    name = forms.CharField(max_length=100)
    auth_method = forms.ChoiceField(label="Auth method")
    base_url = forms.CharField(label="Base URL", max_length=2048, required=False)
    default_model = forms.CharField(label="Default model", max_length=200, required=False)
    is_active = forms.BooleanField(label="Active", required=False, initial=True,
                                   help_text="Inactive connections cannot be bound or called.")
    input_cost_per_million_tokens = forms.DecimalField(
        label="Input price", required=False, min_value=0, max_digits=14, decimal_places=6,
        help_text="Per million input tokens, for models litellm's price table does not know. "
                  "Empty: litellm's price.")
    output_cost_per_million_tokens = forms.DecimalField(
        label="Output price", required=False, min_value=0, max_digits=14, decimal_places=6,
        help_text="Per million output tokens. Empty: litellm's price.")
    timeout_seconds = forms.IntegerField(
        label="Call timeout (s)", required=False, min_value=1, max_value=600,
        help_text="Gateway calls, tests and discovery slower than this count as timed out (a "
                  "fallback is tried). Empty: LLMCONN_PROVIDER_TIMEOUT (tests: 20 s).")
    extra_headers = forms.CharField(
        label="Extra headers", required=False, max_length=8192,
        widget=forms.Textarea(attrs={"rows": 3, "class": "llmconn-wide", "spellcheck": "false",
                                     "placeholder": '{"X-Team": "research"}'}),
        help_text="A JSON object of non-secret headers sent on every call to the provider "
                  "(config.extra_headers). Secret headers: use the custom header auth method.")
    ca_cert = forms.CharField(
        label="CA certificate", required=False, max_length=65536,
        widget=forms.Textarea(attrs={"rows": 3, "class": "llmconn-wide", "spellcheck": "false",
                                     "placeholder": "-----BEGIN CERTIFICATE-----"}),
        help_text="PEM CA certificate(s) trusted for this connection besides the system roots "
                  "(a self-hosted server with a private CA; config.ca_cert).")
    default_params = JSONObjectField(
        label="Default parameters", placeholder='none (e.g. {"temperature": 0.2})',
        help_text="Request fields added to every chat call through this connection "
                  "(temperature, top_p, max_tokens, stop, seed, ...). A binding's override "
                  "these; a request's override both.")
    llmconn_test_id = forms.CharField(required=False, widget=forms.HiddenInput(
        attrs={"id": "id_llmconn_test_id"}))

    class Meta:
        model = Connection
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spec = self.spec
        saved = not self.instance._state.adding  # (a new Connection already has a UUID pk)
        # Changing an existing connection's provider: the new provider's fields, no saved secret
        # offered (a stored key never follows a changed endpoint).
        self.switching = saved and self.instance.provider != spec.name
        if not saved:
            self.instance.provider = spec.name  # for the read-only provider row
        elif not self.is_bound:
            self.initial.update(self._initial_of(self.instance))
            if self.switching:
                self.initial.update({"auth_method": spec.default_auth_method().name,
                                     "base_url": ""})
        self.fields["auth_method"].choices = [(m.name, m.label) for m in spec.auth_methods]
        self.fields["auth_method"].initial = spec.default_auth_method().name
        base = self.fields["base_url"]
        base.required = False
        base.widget.attrs.update({"placeholder": spec.default_base_url or "https://…",
                                  "class": "vLargeTextField llmconn-wide"})
        base.help_text = (f"Empty: the provider's endpoint ({spec.default_base_url})."
                          if spec.default_base_url else "Required: this provider has no default endpoint.")
        model = self.fields["default_model"]
        model.widget = DatalistInput(self.model_options, attrs={"class": "llmconn-wide"})
        model.help_text = ("Used by tests and by workspaces that name no model. Suggestions: "
                           "discovered models." if saved else
                           "Used by tests and by workspaces that name no model.")
        hints = self.instance.credential_summary() if saved and not self.switching else {}
        for key, info in self.layout.items():
            field = info["field"]
            if info["kind"] == "secret":
                self.fields[key] = forms.CharField(
                    label=field.label, required=False, max_length=8192,
                    widget=forms.PasswordInput(render_value=False, attrs={
                        "autocomplete": "new-password", "data-secret-field": field.name,
                        "class": "llmconn-wide", "spellcheck": "false"}),
                    help_text=_secret_help(field, hints.get(field.name),
                                           saved and not self.switching))
                if not field.required and field.name in hints:
                    # An optional secret that is set can be removed (credentials: null).
                    self.fields[REMOVE + field.name] = forms.BooleanField(
                        label=f"Remove {field.label.lower()}", required=False,
                        widget=forms.CheckboxInput(attrs={"data-remove-field": field.name}),
                        help_text="Deletes the saved value when you save (unless you enter "
                                  "a new one above).")
            else:
                self.fields[key] = forms.CharField(
                    label=field.label, required=False, max_length=8192, initial=field.default,
                    widget=forms.TextInput(attrs={"data-config-field": field.name,
                                                  "placeholder": field.default or "",
                                                  "class": "llmconn-wide"}),
                    help_text=field.help_text)

    @staticmethod
    def _initial_of(connection: Connection) -> dict:
        initial = {
            "name": connection.name, "auth_method": connection.auth_method,
            "base_url": connection.base_url or "", "default_model": connection.default_model,
            "is_active": connection.is_active,
            "input_cost_per_million_tokens": connection.input_cost_per_million_tokens,
            "output_cost_per_million_tokens": connection.output_cost_per_million_tokens,
            "timeout_seconds": connection.timeout_seconds,
            "default_params": dict(connection.default_params or {}),
        }
        config = dict(connection.config or {})
        headers = config.pop("extra_headers", None)
        initial["extra_headers"] = json.dumps(headers, indent=1) if headers else ""
        initial["ca_cert"] = config.pop("ca_cert", "") or ""
        initial.update({CONFIG + k: v for k, v in config.items()})
        return initial

    def _method_keys(self, method: str):
        return [(k, i) for k, i in self.layout.items() if method in i["methods"]]

    def _has_saved(self, name: str) -> bool:
        if (self.instance._state.adding or self.switching
                or not self.instance.credentials_readable):
            return False
        return name in self.instance.credential_summary()

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("auth_method")
        if method:
            for key, info in self._method_keys(method):
                field = info["field"]
                if cleaned.get(key) or not field.required:
                    continue
                if info["kind"] == "config" and not field.default:
                    self.add_error(key, "This field is required.")
                elif info["kind"] == "secret" and not self._has_saved(field.name):
                    self.add_error(key, "This field is required.")
        headers = (cleaned.get("extra_headers") or "").strip()
        if headers:
            try:
                parsed = json.loads(headers)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                self.add_error("extra_headers", 'Enter a JSON object, e.g. {"X-Team": "a"}.')
            else:
                cleaned["extra_headers"] = parsed
        else:
            cleaned["extra_headers"] = None
        self.add_service_errors()
        return cleaned

    def _post_clean(self):
        """Skip model validation here: the services run full_clean() and their errors come
        back onto the fields (add_service_errors)."""

    def service_settings(self) -> tuple[dict, dict]:
        """(settings, credentials) for connection_create/connection_update."""
        data = self.cleaned_data
        method = data["auth_method"]
        config, credentials = {}, {}
        for key, info in self._method_keys(method):
            value = data.get(key)
            if value:
                (credentials if info["kind"] == "secret" else config)[info["field"].name] = value
            elif info["kind"] == "secret" and data.get(REMOVE + info["field"].name):
                credentials[info["field"].name] = None  # remove the saved optional secret
        if data.get("extra_headers"):
            config["extra_headers"] = data["extra_headers"]
        if (data.get("ca_cert") or "").strip():
            config["ca_cert"] = data["ca_cert"].strip()
        settings = {
            "name": data["name"], "auth_method": method, "base_url": data.get("base_url") or None,
            "default_model": data.get("default_model") or "", "config": config,
            "is_active": bool(data.get("is_active")),
            "input_cost_per_million_tokens": data.get("input_cost_per_million_tokens"),
            "output_cost_per_million_tokens": data.get("output_cost_per_million_tokens"),
            "timeout_seconds": data.get("timeout_seconds"),
            "default_params": data.get("default_params") or {},
        }
        return settings, credentials

    def field_for_error(self, path, message):
        if path in ("name", "base_url", "default_model", "auth_method", "is_active",
                    "input_cost_per_million_tokens", "output_cost_per_million_tokens",
                    "timeout_seconds", "default_params"):
            return path
        if path == "provider":
            return "auth_method"
        for name in ("extra_headers", "ca_cert"):
            if name in (path or "") or (path == "config" and name in message):
                return name
        head, _, tail = (path or "").partition(".")
        if head == "credentials" and tail and SECRET + tail in self.fields:
            return SECRET + tail
        if head in ("credentials", "config"):
            prefix = SECRET if head == "credentials" else CONFIG
            for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message):
                if prefix + name in self.fields:
                    return prefix + name
        return None


# --- list filters -------------------------------------------------------------------------------

class ProviderFilter(admin.SimpleListFilter):
    """Providers in use, by their catalog label."""

    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        used = set(Connection.objects.order_by().values_list("provider", flat=True).distinct())
        known = [(p.name, p.label) for p in all_providers() if p.name in used]
        return known + [(name, name) for name in sorted(used - {n for n, _ in known})]

    def queryset(self, request, queryset):
        return queryset.filter(provider=self.value()) if self.value() else queryset


class ActiveFilter(admin.SimpleListFilter):
    title = "active"
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", "Active"), ("no", "Inactive")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(is_active=self.value() == "yes")
        return queryset


class OwnerFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("shared", "Shared"), ("personal", "Personal")]

    def queryset(self, request, queryset):
        if self.value() in ("shared", "personal"):
            return queryset.filter(owner__isnull=self.value() == "shared")
        return queryset


# --- the admin ----------------------------------------------------------------------------------

def _when(value) -> str:
    """A local date and time in the admin's one format (llmconn/formats: "21 Nov 2026, 19:02")."""
    if not value:
        return "—"
    return date_format(localtime(value), "DATETIME_FORMAT")


def _status_badge(status: str, error_class: str = "", title: str = "") -> str:
    if status == ConnectionStatus.OK:
        return badge("OK", "ok", title)
    if status == ConnectionStatus.FAILED:
        label = f"Failed · {error_class}" if error_class else "Failed"
        title = title or (ErrorClass(error_class).label if error_class in ErrorClass.values else "")
        return badge(label, "failed", title)
    return badge("Untested", "untested", title)


@admin.register(Connection)
class ConnectionAdmin(AuditHistoryMixin, ServiceAdminMixin, StaffOnlyAdminMixin,
                      admin.ModelAdmin):
    audit_target_type = "connection"
    form = ConnectionAdminForm
    # Fits 1400 px without scrolling: dates of creation are on the change page.
    list_display = ("name", "provider_label", "auth_method_label", "status_badge",
                    "last_tested", "models_count", "used_by_count", "default_mark",
                    "owner_label", "updated")
    list_filter = (ProviderFilter, "status", ActiveFilter, OwnerFilter)
    search_fields = ("name",)
    ordering = ("name",)
    list_per_page = 50
    actions = ["test_selected", "discover_models", "make_default", "move_bindings",
               "deactivate_selected", "delete_selected"]
    readonly_fields = ("provider_display", "status_display", "models_display",
                       "used_by_display", "history_display", "revision", "created",
                       "updated")

    class Media:
        css = {"all": (CSS,)}

    # -- list ------------------------------------------------------------------------------

    def get_queryset(self, request):
        # Counts as correlated subqueries and the newest test prefetched: a constant number of
        # queries per page (connections.selectors).
        return connection_list_detailed().select_related("owner")

    # -- personal connections: metadata only (the API's rule) ------------------------------

    @staticmethod
    def in_full(request, obj) -> bool:
        """Whether this user may see `obj`'s config and hints and change it (None: adding)."""
        return obj is None or sees_in_full(request.user, obj)

    def _require_full(self, request, obj) -> None:
        if not self.in_full(request, obj):
            raise PermissionDenied

    def _split_full(self, request, queryset, what: str) -> list[Connection]:
        """The selected connections this user may act on; says how many personal ones of other
        users were left out."""
        rows = list(queryset)
        allowed = [c for c in rows if self.in_full(request, c)]
        skipped = len(rows) - len(allowed)
        if skipped:
            self.message_user(request, f"{skipped} personal connection(s) of other users not "
                                       f"{what}: staff may only deactivate them.",
                              messages.WARNING)
        return allowed

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self.in_full(request, obj)

    @admin.display(description="Owner", ordering="owner__username")
    def owner_label(self, obj: Connection) -> str:
        if obj.owner_id is None:
            return format_html('<span class="llmconn-quiet">{}</span>', "shared")
        return obj.owner.get_username() if obj.owner else str(obj.owner_id)

    def personal_view(self, request, obj: Connection):
        """Another user's personal connection: its metadata (what the API shows staff) and a
        Deactivate button (connection_update(is_active=False), as the API's PATCH)."""
        if request.method == "POST":
            if "deactivate" not in request.POST:
                raise PermissionDenied
            try:
                services.connection_update(connection=obj, actor=request.user, is_active=False)
            except (ApplicationError, ValidationError) as exc:
                messages.error(request, f"Not deactivated: {error_message(exc)}")
            else:
                messages.success(request, f"The personal connection “{obj.name}” is deactivated: "
                                          "it can no longer be called.")
            return HttpResponseRedirect(
                reverse("admin:connections_connection_change", args=[obj.pk]))
        obj = connection_list_detailed().select_related("owner").get(pk=obj.pk)
        spec = obj.spec
        method = spec.auth_method(obj.auth_method) if spec else None
        tests = getattr(obj, "latest_tests", None) or []
        rows = [
            ("Owner", obj.owner.get_username() if obj.owner else str(obj.owner_id)),
            ("Provider", spec.label if spec else obj.provider),
            ("Auth method", method.label if method else obj.auth_method),
            ("Base URL", obj.base_url or "—"),
            ("Default model", obj.default_model or "—"),
            ("Active", "yes" if obj.is_active else "no"),
            ("Status", _status_badge(obj.status, obj.last_error_class)),
            ("Last tested", _when(obj.last_tested_at)),
            ("Last test latency", f"{tests[0].latency_ms} ms"
             if tests and tests[0].latency_ms is not None else "—"),
            ("Last used", _when(obj.last_used_at)),
            ("Discovered models", obj.models_count),
            ("Created", _when(obj.created_at)),
            ("Updated", _when(obj.updated_at)),
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Personal connection",
            "subtitle": obj.name,
            "opts": self.opts,
            "original": obj,
            "rows": rows,
            "history_url": reverse("admin:connections_connection_history", args=[obj.pk]),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/connections/connection/personal.html", context)

    @admin.display(description="Provider", ordering="provider")
    def provider_label(self, obj: Connection) -> str:
        spec = obj.spec
        return spec.label if spec else obj.provider

    @admin.display(description="Auth method", ordering="auth_method")
    def auth_method_label(self, obj: Connection) -> str:
        spec = obj.spec
        method = spec.auth_method(obj.auth_method) if spec else None
        return method.label if method else obj.auth_method

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Connection) -> str:
        tests = getattr(obj, "latest_tests", None) or []
        title = ""
        if tests and tests[0].latency_ms is not None:
            title = f"Last test: {tests[0].status}, {tests[0].latency_ms} ms"
        html = _status_badge(obj.status, obj.last_error_class, title)
        if not obj.is_active:
            html = format_html("{} {}", html, badge("inactive", "muted"))
        return html

    @admin.display(description="Default", ordering="-is_default")
    def default_mark(self, obj: Connection) -> str:
        return badge("★ default", "default", "The default connection of its provider") \
            if obj.is_default else ""

    @admin.display(description="Last tested", ordering="last_tested_at")
    def last_tested(self, obj: Connection) -> str:
        return _when(obj.last_tested_at)

    @admin.display(description="Models", ordering="models_count")
    def models_count(self, obj: Connection) -> int:
        return obj.models_count

    @admin.display(description="Used by", ordering="used_by_count")
    def used_by_count(self, obj: Connection) -> int:
        return obj.used_by_count

    # -- add: provider or preset first -----------------------------------------------------

    def _spec(self, request, obj=None):
        if obj is not None:
            switch = find_provider(request.GET.get("provider") or "")
            return switch or obj.spec  # ?provider=: changing this connection's provider
        preset = self._preset(request)
        if preset is not None:
            return find_provider(preset.provider)
        name = request.GET.get("provider")
        return find_provider(name) if name else None

    @staticmethod
    def _preset(request):
        name = request.GET.get("preset")
        return next((p for p in all_presets() if p.name == name), None) if name else None

    def add_view(self, request, form_url="", extra_context=None):
        if self._spec(request) is None:
            if request.GET.get("provider") or request.GET.get("preset"):
                messages.error(request, "Unknown provider or preset: choose one below.")
            return self.provider_picker_view(request)
        return super().add_view(request, form_url, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and not self.in_full(request, obj):
            if not self.has_view_permission(request, obj):
                raise PermissionDenied
            return self.personal_view(request, obj)
        if obj is not None and obj.spec is None:
            # A provider removed from the catalog: the form cannot be built; say so.
            self.message_user(request, f"“{obj.name}” uses the provider {obj.provider!r}, which "
                                       "is no longer in the catalog: it can be deleted, or its "
                                       "bindings moved, but not edited.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:connections_connection_changelist"))
        if obj is not None and request.method == "GET" and "change_provider" in request.GET:
            return self.provider_picker_view(request, obj)
        return super().change_view(request, object_id, form_url, extra_context)

    def provider_picker_view(self, request, obj=None):
        """Cards of presets and provider types: step 1 of adding, or (with `obj`) the new
        provider of an existing connection (its change form then shows that provider's fields)."""
        if not (self.has_change_permission(request, obj) if obj is not None
                else self.has_add_permission(request)):
            raise PermissionDenied
        self._require_full(request, obj)
        add_url = (reverse("admin:connections_connection_change", args=[obj.pk]) if obj
                   else reverse("admin:connections_connection_add"))
        presets = []
        for preset in (all_presets() if obj is None else []):
            spec = find_provider(preset.provider)
            data = preset.as_dict()
            method = spec.auth_method(data["auth_method"])
            presets.append({**data, "provider_label": spec.label,
                            "auth_label": method.label if method else data["auth_method"],
                            "url": f"{add_url}?{urlencode({'preset': preset.name})}"})
        providers = [{
            "name": spec.name, "label": spec.label,
            "auth_labels": [m.label for m in spec.auth_methods],
            "capabilities": sorted(spec.capabilities),
            "endpoint": spec.default_base_url or "",
            "url": f"{add_url}?{urlencode({'provider': spec.name})}",
        } for spec in all_providers() if obj is None or spec.name != obj.provider]
        context = {
            **self.admin_site.each_context(request),
            "title": "Add connection" if obj is None else f"Change the provider of {obj.name}",
            "subtitle": "Choose a provider or a preset" if obj is None else "Choose a provider",
            "original": obj,
            "opts": self.opts,
            "presets": presets,
            "providers": providers,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/connections/connection/pick_provider.html",
                                context)

    def get_changeform_initial_data(self, request):
        spec = self._spec(request)
        initial = {"is_active": True, "auth_method": spec.default_auth_method().name}
        preset = self._preset(request)
        if preset is not None:
            data = preset.as_dict()
            initial.update({"name": preset.label, "auth_method": data["auth_method"],
                            "base_url": preset.base_url or "",
                            "default_model": preset.default_model})
            initial.update({CONFIG + k: v for k, v in preset.config.items()})
        return initial

    # -- the form --------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        self._require_full(request, obj)  # the form holds config and credential hints
        spec = self._spec(request, obj)
        if spec is None:
            raise Http404("This connection's provider is not in the catalog.")
        if obj is not None:
            options = list(obj.discovered_models.order_by("model_id")
                           .values_list("model_id", flat=True)[:500]) or list(spec.models)
        else:
            options = list(spec.models)
        return type("ConnectionAdminForm", (self.form,), {
            "spec": spec, "layout": form_layout(spec), "model_options": tuple(options),
            "service_error": getattr(request, SERVICE_ERROR_ATTR, None),
        })

    def get_fieldsets(self, request, obj=None):
        spec = self._spec(request, obj)
        if spec is None:
            return [(None, {"fields": ["name"]})]
        layout = form_layout(spec)
        config = [k for k, i in layout.items() if i["kind"] == "config"]
        secrets = []
        for key, info in layout.items():
            if info["kind"] == "secret":
                secrets.append(key)
                field = info["field"]
                switching = obj is not None and obj.provider != spec.name
                if (obj is not None and not switching and not field.required
                        and field.name in obj.credential_summary()):
                    secrets.append(REMOVE + field.name)
        fieldsets = [(None, {"fields": ["provider_display", "name", "auth_method", "base_url",
                                        "default_model", "is_active", "llmconn_test_id"]})]
        if config:
            fieldsets.append(("Provider settings", {"fields": config,
                                                    "classes": ["llmconn-config"]}))
        fieldsets.append(("Credentials", {
            "fields": secrets, "classes": ["llmconn-credentials"],
            "description": "Secrets are stored encrypted and never shown again, not even here.",
        }))
        fieldsets.append(("Gateway calls", {
            "fields": ["input_cost_per_million_tokens", "output_cost_per_million_tokens",
                       "timeout_seconds", "default_params", "extra_headers", "ca_cert"],
            "classes": ["collapse"]}))
        if obj is not None:
            fieldsets.append(("Status", {"fields": ["status_display", "models_display",
                                                    "used_by_display", "history_display",
                                                    "revision", "created", "updated"]}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ("provider_display",)
        return self.readonly_fields

    def render_change_form(self, request, context, add=False, change=False, form_url="",
                           obj=None):
        spec = self._spec(request, obj)
        if obj is not None and spec.name == obj.provider:
            context["rotation"] = self._rotation_context(obj)
        context["llmconn_spec"] = {
            "provider": spec.name,
            "connection": str(obj.pk) if obj else None,
            "fields": {key: {"name": info["field"].name, "kind": info["kind"],
                             "methods": info["methods"]}
                       for key, info in form_layout(spec).items()},
            "urls": {
                "tests": reverse("v1:connection-tests"),
                "test_saved": reverse("v1:connection-test", args=[obj.pk]) if obj else None,
                "test_detail": reverse("v1:connection-test-detail", args=[ZERO_UUID]),
                "discover": reverse("v1:connection-discover-models", args=[obj.pk]) if obj else None,
                "models": reverse("v1:connection-models", args=[obj.pk]) if obj else None,
            },
        }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_form(self, request, form, change):
        """Create or update through the services; a refusal goes back onto the form."""
        settings, credentials = form.service_settings()
        try:
            if change:
                if form.switching:
                    settings["provider"] = form.spec.name
                return services.connection_update(connection=form.instance, actor=request.user,
                                                  credentials=credentials, **settings)
            # A preset only fills the form in (get_changeform_initial_data): what is saved is
            # what the form shows, so it is created like any other connection.
            connection = services.connection_create(provider=form.spec.name, actor=request.user,
                                                    credentials=credentials, **settings)
        except (ApplicationError, ValidationError) as exc:
            raise ServiceRefused(exc) from exc
        test_id = form.cleaned_data.get("llmconn_test_id")
        if test_id and diagnostics.connection_test_adopt(connection=connection, test_id=test_id,
                                                         actor=request.user):
            connection.refresh_from_db()  # its status is the test's
        return connection

    # -- read-only rows of the change form -------------------------------------------------

    @admin.display(description="Provider")
    def provider_display(self, obj: Connection) -> str:
        spec = obj.spec
        label = spec.label if spec else obj.provider
        if obj._state.adding:
            return format_html('<strong>{}</strong> <a class="llmconn-quiet" href="{}">choose another</a>',
                               label, reverse("admin:connections_connection_add"))
        change_url = reverse("admin:connections_connection_change", args=[obj.pk])
        return format_html('<strong>{}</strong> <a class="llmconn-quiet" id="llmconn-change-provider" '
                           'href="{}?change_provider=1">change provider…</a>', label, change_url)

    @admin.display(description="Created")
    def created(self, obj: Connection) -> str:
        return _when(obj.created_at)

    @admin.display(description="Updated", ordering="updated_at")
    def updated(self, obj: Connection) -> str:
        return _when(obj.updated_at)

    @admin.display(description="Status")
    def status_display(self, obj: Connection) -> str:
        html = _status_badge(obj.status, obj.last_error_class)
        if obj.is_default:
            html = format_html("{} {}", html, badge("default", "default",
                                                    "The default connection of its provider"))
        tests = getattr(obj, "latest_tests", None)
        if tests is None:
            tests = list(obj.tests.filter(kind="test").order_by("-created_at", "-id")[:1])
        if obj.last_tested_at:
            html = format_html('{} <span class="llmconn-quiet">last tested {}</span>', html,
                               _when(obj.last_tested_at))
        if tests and tests[0].latency_ms is not None:
            html = format_html('{} <span class="llmconn-quiet">· {} ms</span>', html,
                               tests[0].latency_ms)
        return format_html('<span id="llmconn-status">{}</span>', html)

    @admin.display(description="Discovered models")
    def models_display(self, obj: Connection) -> str:
        names = list(obj.discovered_models.order_by("model_id").values_list("model_id", flat=True)[:41])
        if not names:
            return format_html('<span class="llmconn-quiet" id="llmconn-models-list">{}</span>',
                               "None yet: use “Discover models” above.")
        more = len(names) > 40
        chips = format_html_join("", '<span class="llmconn-chip">{}</span>',
                                 ((n,) for n in names[:40]))
        return format_html('<div class="llmconn-chips" id="llmconn-models-list">{}{}</div>', chips,
                           " …" if more else "")

    @admin.display(description="Used by")
    def used_by_display(self, obj: Connection) -> str:
        rows = with_admin_urls(connection_dependents(connection=obj))
        if not rows:
            return format_html('<span class="llmconn-quiet">{}</span>', "No workspace uses it.")
        items = format_html_join(
            "", '<li><a href="{}">{}</a> · {}</li>',
            ((r["url"], r["workspace_name"] or "System default", r["role"]) for r in rows))
        move = reverse("admin:connections_connection_move_bindings", args=[obj.pk])
        return format_html('<ul class="llmconn-list">{}</ul><a href="{}">Move these bindings to '
                           'another connection…</a>', items, move)

    def delete_view(self, request, object_id, extra_context=None):
        """Lists the workspaces and roles using the connection and refuses while any remain;
        the delete itself is the service's (409 Conflict when still bound)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_delete_permission(request, obj):
            raise PermissionDenied
        status = 200
        dependents = connection_dependents(connection=obj)
        if request.method == "POST":
            try:
                services.connection_delete(connection=obj, actor=request.user)
            except Conflict as exc:
                dependents = exc.extra.get("bindings") or connection_dependents(connection=obj)
                messages.error(request, exc.message)
                status = 409
            except (ApplicationError, ValidationError) as exc:
                messages.error(request, error_message(exc))
                status = 400
            else:
                self.message_user(request, f"The connection “{obj.name}” was deleted.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:connections_connection_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Cannot delete this connection" if dependents else "Delete connection",
            "subtitle": obj.name,
            "object": obj,
            "object_name": "connection",
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "dependents": with_admin_urls(dependents),
            "tests_count": obj.tests.count(),
            "models_count": obj.discovered_models.count(),
            "move_url": reverse("admin:connections_connection_move_bindings", args=[obj.pk]),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/connections/connection/delete_confirmation.html",
                                context, status=status)

    def get_deleted_objects(self, objs, request):
        """For "delete selected": bound connections are listed as protected (nothing deleted)."""
        objs = list(objs)
        protected = []
        for obj in objs:
            if not self.in_full(request, obj):
                protected.append(f"{obj.name}: another user's personal connection (staff may "
                                 "only deactivate it)")
                continue
            for d in connection_dependents(connection=obj):
                where = (f"workspace “{d['workspace_name']}”" if d["workspace"]
                         else "the system default")
                protected.append(f"{obj.name}: used by {where} as {d['role']}")
        return [str(o) for o in objs], {"connections": len(objs)}, set(), protected

    def delete_queryset(self, request, queryset):
        for obj in self._split_full(request, queryset, "deleted"):
            try:
                services.connection_delete(connection=obj, actor=request.user)
            except (ApplicationError, ValidationError) as exc:
                messages.error(request, error_message(exc))

    def delete_model(self, request, obj):
        self._require_full(request, obj)
        services.connection_delete(connection=obj, actor=request.user)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/move-bindings/",
                 self.admin_site.admin_view(self.move_bindings_view),
                 name="%s_%s_move_bindings" % info),
            path("<path:object_id>/rotate-secret/",
                 self.admin_site.admin_view(self.rotate_secret_view),
                 name="%s_%s_rotate_secret" % info),
            path("<path:object_id>/rollback-secret/",
                 self.admin_site.admin_view(self.rollback_secret_view),
                 name="%s_%s_rollback_secret" % info),
        ] + super().get_urls()

    # -- staged secret rotation and rollback (connections.secret_rotation, as the API) -------

    @staticmethod
    def _rotation_context(obj: Connection) -> dict:
        spec = obj.spec
        method = spec.auth_method(obj.auth_method) if spec else None
        fields = [{"name": ROTATE + f.name, "label": f.label, "required": f.required}
                  for f in (method.secret_fields if method else ())]
        expires = obj.previous_secrets_expires_at
        can_roll_back = bool(expires and expires > timezone.now()
                             and obj.previous_secrets is not None)
        return {
            "fields": fields,
            "rotate_url": reverse("admin:connections_connection_rotate_secret", args=[obj.pk]),
            "rollback_url": reverse("admin:connections_connection_rollback_secret",
                                    args=[obj.pk]),
            "can_roll_back": can_roll_back,
            "expires": _when(expires) if can_roll_back else "",
        }

    def _connection_for_post(self, request, object_id) -> Connection:
        if request.method != "POST":
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_change_permission(request, obj):
            raise PermissionDenied
        self._require_full(request, obj)
        return obj

    def _back_to(self, obj: Connection) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:connections_connection_change", args=[obj.pk]) + "#rotate")

    def rotate_secret_view(self, request, object_id):
        """Stage the secrets entered under "Rotate secret", test them, promote only if the test
        passes (connection_rotate_secret); the test's result is the message shown."""
        from .secret_rotation import connection_rotate_secret

        obj = self._connection_for_post(request, object_id)
        credentials = {key[len(ROTATE):]: value for key, value in request.POST.items()
                       if key.startswith(ROTATE) and value}
        if not credentials:
            messages.error(request, "Enter the new secret to rotate to.")
            return self._back_to(obj)
        try:
            outcome = connection_rotate_secret(connection=obj, credentials=credentials,
                                               actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            messages.error(request, f"Not rotated: {error_message(exc)}")
            return self._back_to(obj)
        test = outcome.test
        latency = f", {test.latency_ms} ms" if test.latency_ms is not None else ""
        if outcome.promoted:
            until = _when(outcome.previous_expires_at) if outcome.previous_expires_at else ""
            messages.success(request, f"New secret tested OK{latency} and promoted. The previous "
                                      f"one can be rolled back until {until}.")
        else:
            messages.error(request, f"New secret refused: the test failed ({test.error_class}"
                                    f"{latency}): {test.message} The current secret is kept.")
        return self._back_to(obj)

    def rollback_secret_view(self, request, object_id):
        """Bring back the secret the last rotation replaced (connection_rollback_secret)."""
        from .secret_rotation import connection_rollback_secret

        obj = self._connection_for_post(request, object_id)
        try:
            connection_rollback_secret(connection=obj, actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            messages.error(request, f"Not rolled back: {error_message(exc)}")
        else:
            messages.success(request, "Rolled back to the previous secret. Its status is "
                                      "Untested until the next test.")
        return self._back_to(obj)

    def move_bindings_view(self, request, object_id):
        """Choose the connection that takes over every binding of this one, then move them."""
        source = self.get_object(request, unquote(object_id))
        if source is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, source):
            raise PermissionDenied
        self._require_full(request, source)
        targets = list(Connection.objects.filter(is_active=True, owner__isnull=True)
                       .exclude(pk=source.pk)
                       .only("id", "name", "provider").order_by("name"))
        error, status, chosen = "", 200, request.POST.get("to", "")
        if request.method == "POST":
            target = next((t for t in targets if str(t.pk) == chosen), None)
            if target is None:
                error, status = "Choose the connection that takes over the bindings.", 400
            else:
                try:
                    result = services.connection_move_bindings(source=source, target=target,
                                                               actor=request.user)
                except (ApplicationError, ValidationError) as exc:
                    error, status = error_message(exc), 400
                else:
                    self.message_user(
                        request,
                        f"Moved {result['moved_bindings']} binding(s) and "
                        f"{result['moved_system_defaults']} system default(s) from "
                        f"“{source.name}” to “{target.name}”.", messages.SUCCESS)
                    return HttpResponseRedirect(
                        reverse("admin:connections_connection_change", args=[target.pk]))
        options = []
        for t in targets:
            spec = t.spec
            caps = sorted(spec.capabilities) if spec else []
            options.append({"id": str(t.pk), "name": t.name,
                            "provider": spec.label if spec else t.provider,
                            "capabilities": ", ".join(caps)})
        context = {
            **self.admin_site.each_context(request),
            "title": "Move bindings",
            "subtitle": source.name,
            "opts": self.opts,
            "object": source,
            "dependents": with_admin_urls(connection_dependents(connection=source)),
            "targets": options,
            "chosen": chosen,
            "error": error,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/connections/connection/move_bindings.html",
                                context, status=status)

    # -- actions ---------------------------------------------------------------------------

    def _report_jobs(self, request, jobs: list[ConnectionTest], what: str) -> None:
        if not jobs:
            return
        done = {t.pk: t for t in ConnectionTest.objects.filter(pk__in=[j.pk for j in jobs])
                .defer("secrets", "config")}
        ok = [t for t in done.values() if t.status == TestStatus.SUCCEEDED]
        failed = [t for t in done.values() if t.status == TestStatus.FAILED]
        waiting = len(jobs) - len(ok) - len(failed)
        parts = [f"{len(ok)} succeeded", f"{len(failed)} failed"]
        if waiting:
            parts.append(f"{waiting} still running (refresh in a moment)")
        text = f"{what} {len(jobs)} connection(s): {', '.join(parts)}."
        if failed:
            names = {c.pk: c.name for c in Connection.objects.filter(
                pk__in=[t.connection_id for t in failed]).only("id", "name")}
            text += " Failed: " + "; ".join(
                f"{names.get(t.connection_id, '?')} ({t.error_class}: {t.message})" for t in failed[:5])
        level = messages.WARNING if failed else messages.SUCCESS
        self.message_user(request, text, level)

    @admin.action(description="Test selected connections")
    def test_selected(self, request, queryset):
        jobs = [diagnostics.connection_test_request(connection=c, actor=request.user)
                for c in self._split_full(request, queryset, "tested")]
        self._report_jobs(request, jobs, "Tested")

    @admin.action(description="Discover models of selected connections")
    def discover_models(self, request, queryset):
        jobs = [diagnostics.connection_discover_models_request(connection=c, actor=request.user)
                for c in self._split_full(request, queryset, "run")]
        self._report_jobs(request, jobs, "Discovered the models of")

    @admin.action(description="Make the selected connection its provider's default")
    def make_default(self, request, queryset):
        chosen = self._split_full(request, queryset[:2], "changed")
        if len(chosen) != 1:
            self.message_user(request, "Choose exactly one connection to make default.",
                              messages.WARNING)
            return
        try:
            connection = services.connection_set_default(connection=chosen[0], actor=request.user)
        except (ApplicationError, ValidationError) as exc:
            self.message_user(request, error_message(exc), messages.ERROR)
            return
        spec = connection.spec
        self.message_user(request, f"“{connection.name}” is now the default "
                                   f"{spec.label if spec else connection.provider} connection.",
                          messages.SUCCESS)

    @admin.action(description="Move all bindings of the selected connection to another…")
    def move_bindings(self, request, queryset):
        chosen = [c.pk for c in self._split_full(request, queryset[:2], "changed")]
        if len(chosen) != 1:
            self.message_user(request, "Choose exactly one connection whose bindings to move.",
                              messages.WARNING)
            return None
        return HttpResponseRedirect(
            reverse("admin:connections_connection_move_bindings", args=[chosen[0]]))

    @admin.action(description="Deactivate selected connections")
    def deactivate_selected(self, request, queryset):
        """Deactivate (connection_update(is_active=False), as the API's PATCH): the one change
        staff may make to another user's personal connection."""
        done = 0
        for connection in queryset.filter(is_active=True):
            try:
                services.connection_update(connection=connection, actor=request.user,
                                           is_active=False)
            except (ApplicationError, ValidationError) as exc:
                self.message_user(request, f"{connection.name}: {error_message(exc)}",
                                  messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"Deactivated {done} connection(s).", messages.SUCCESS)
