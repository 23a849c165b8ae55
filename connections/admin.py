"""Django admin for connections. Secrets are password inputs that are never filled in: the
form shows "saved, ends in WXYZ; leave blank to keep", and every save goes through the
services, so admin, API and commands share one set of rules."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from llmconn.errors import ApplicationError
from providers.base import all_providers, find_provider

from . import services
from .models import Connection

SECRET_PREFIX = "secret__"


def _provider_choices():
    return [(p.name, p.label) for p in all_providers()]


def _auth_method_choices():
    seen: dict[str, str] = {}
    for p in all_providers():
        for m in p.auth_methods:
            seen.setdefault(m.name, m.label)
    return sorted(seen.items())


class ConnectionAdminForm(forms.ModelForm):
    """Model fields plus one password input per secret field of the chosen provider/method."""

    provider = forms.ChoiceField(choices=_provider_choices)
    auth_method = forms.ChoiceField(choices=_auth_method_choices)

    class Meta:
        model = Connection
        fields = ["name", "provider", "auth_method", "base_url", "default_model", "config",
                  "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        provider = self.data.get("provider") or self.initial.get("provider") or (
            self.instance.provider if self.instance.pk else None)
        method = self.data.get("auth_method") or self.initial.get("auth_method") or (
            self.instance.auth_method if self.instance.pk else None)
        spec = find_provider(provider) if provider else None
        names: set[str] = set()
        if spec:
            method = method or spec.default_auth_method().name
            names = set(spec.secret_field_names(method))
        else:
            for p in all_providers():
                for m in p.auth_methods:
                    names |= {f.name for f in m.secret_fields}
        hints = self.instance.credential_summary() if self.instance.pk else {}
        for name in sorted(names):
            info = hints.get(name)
            if info and info.get("readable", True):
                help_text = (f"Saved, ends in {info['hint'].lstrip('…')}; leave blank to keep."
                             if info["hint"] else "Saved; leave blank to keep.")
            elif info:
                help_text = "Stored value cannot be decrypted; enter it again."
            else:
                help_text = "Not set." if self.instance.pk else ""
            self.fields[SECRET_PREFIX + name] = forms.CharField(
                label=name.replace("_", " ").capitalize(),
                required=False,
                strip=True,
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                help_text=help_text,
            )

    def clean(self):
        cleaned = super().clean()
        # Let the model's clean() see the secrets the connection will hold after the save
        # (stored ones kept unless replaced), so catalog rules report on this form.
        spec = find_provider(cleaned.get("provider") or "")
        if spec and self.instance.credentials_readable:
            allowed = set(spec.secret_field_names(cleaned.get("auth_method") or ""))
            kept = {k: v for k, v in (self.instance.secrets or {}).items() if k in allowed}
            self.instance.secrets = {**kept, **self.credentials()}
        return cleaned

    def credentials(self) -> dict:
        return {
            key.removeprefix(SECRET_PREFIX): value
            for key, value in self.cleaned_data.items()
            if key.startswith(SECRET_PREFIX) and value
        }


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionAdminForm
    list_display = ("name", "provider_label", "auth_method", "status_badge", "last_tested_at",
                    "is_default", "is_active", "updated_at", "created_at")
    list_filter = ("provider", "status", "is_active", "is_default")
    search_fields = ("name",)
    readonly_fields = ("credentials_state", "is_default", "status", "last_tested_at", "revision",
                       "created_at", "updated_at")

    @admin.display(description="Provider", ordering="provider")
    def provider_label(self, obj: Connection) -> str:
        spec = obj.spec
        return spec.label if spec else obj.provider

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Connection) -> str:
        colours = {"ok": "#2e7d32", "failed": "#c62828", "untested": "#757575"}
        label = obj.get_status_display()
        if obj.status == "failed" and obj.last_error_class:
            label = f"{label} ({obj.last_error_class})"
        return format_html('<span style="color:{}">{}</span>', colours.get(obj.status, "#000"),
                           label)

    @admin.display(description="Credentials")
    def credentials_state(self, obj: Connection) -> str:
        if not obj.pk:
            return "-"
        if not obj.credentials_readable:
            return "Credentials unreadable (encrypted with a key no longer configured): re-enter them."
        summary = obj.credential_summary()
        if not summary:
            return "None stored."
        return ", ".join(
            f"{name}: saved{' (ends in ' + info['hint'].lstrip('…') + ')' if info['hint'] else ''}"
            for name, info in summary.items()
        )

    def save_model(self, request, obj, form, change):
        data = {f: form.cleaned_data.get(f) for f in form.Meta.fields}
        try:
            if change:
                saved = services.connection_update(
                    connection=obj, actor=request.user, credentials=form.credentials(), **data)
            else:
                saved = services.connection_create(
                    actor=request.user, credentials=form.credentials(), **data)
        except (ApplicationError, ValidationError) as exc:
            # The form already validated the model fields; what is left is a service rule.
            message = getattr(exc, "message", None) or "; ".join(getattr(exc, "messages", []))
            self.message_user(request, message, level=messages.ERROR)
            raise _AbortSave from exc
        obj.pk = saved.pk

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _AbortSave:
            from django.http import HttpResponseRedirect

            return HttpResponseRedirect(request.get_full_path())

    def delete_model(self, request, obj):
        services.connection_delete(connection=obj, actor=request.user)


class _AbortSave(Exception):
    """Raised inside save_model to stop the admin from reporting success."""
