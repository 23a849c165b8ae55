"""Pieces the admin classes of every app share: service errors shown as form errors, staff-only
permissions, status badges and links to the audit history.

The admin never writes a model itself: every save, delete and action calls the same services
as the API. A service refuses with an `ApplicationError` or Django's `ValidationError`; the
admin shows that as form errors or a message, never as a 500.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from .errors import ApplicationError

SERVICE_ERROR_ATTR = "_llmconn_service_error"


class ServiceRefused(Exception):
    """Raised from `save_form` when the service refused the change; carries the service's error."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def error_items(exc: Exception) -> list[tuple[str | None, str]]:
    """A service error as (field path or None, message) pairs.

    Field paths are the service's names: "name", "base_url", "credentials.api_key",
    "credentials", "config", "bindings.chat.model"... None is a message for the whole form.
    """
    items: list[tuple[str | None, str]] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif isinstance(value, (list, tuple)):
            for message in value:
                walk(prefix, message)
        else:
            items.append((prefix or None, str(value)))

    if isinstance(exc, ApplicationError):
        items.append((None, exc.message))
        walk("", exc.fields or {})
    elif isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            for field, errors in exc.error_dict.items():
                for message in ValidationError(errors).messages:
                    items.append((None if field == "__all__" else field, message))
        else:
            items.extend((None, message) for message in exc.messages)
    else:  # pragma: no cover - only the two families above are caught
        items.append((None, str(exc)))
    return items


def error_message(exc: Exception) -> str:
    """One sentence for a message box."""
    if isinstance(exc, ApplicationError):
        return exc.message
    return " ".join(message for _, message in error_items(exc))


class ServiceFormMixin:
    """Form side: attach the service error (if any) found on the request to the fields."""

    service_error: Exception | None = None

    def field_for_error(self, path: str | None, message: str) -> str | None:
        """The form field a service error path belongs to (None: the whole form)."""
        if path and path in self.fields:
            return path
        return None

    def add_service_errors(self) -> None:
        if self.service_error is None:
            return
        general: list[str] = []
        placed: set[str] = set()
        for path, message in error_items(self.service_error):
            field = self.field_for_error(path, message) if path else None
            if field is not None and field in self.fields:
                self.add_error(field, message)
                placed.add(message)
            else:
                general.append(message)
        for message in dict.fromkeys(general):
            if message not in placed:  # the summary often repeats the one field error
                self.add_error(None, message)


class ServiceAdminMixin:
    """ModelAdmin side: `save_form` calls the service and raises `ServiceRefused` when it
    refuses; the form is then validated again with the service's error attached, so the admin
    renders it the usual way (fields kept, errors next to the fields)."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            # The transaction of the first pass rolled back; a second pass renders the errors.
            setattr(request, SERVICE_ERROR_ATTR, refused.error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        """Nothing: `save_form` saved through the service."""

    def save_related(self, request, form, formsets, change):
        """Nothing: related rows change only through services."""


class StaffOnlyAdminMixin:
    """Staff manage everything, as in the API (IsAdminUser); nobody else sees these pages."""

    def _is_staff(self, request) -> bool:
        user = request.user
        return bool(user and user.is_active and user.is_staff)

    def has_module_permission(self, request):
        return self._is_staff(request)

    def has_view_permission(self, request, obj=None):
        return self._is_staff(request)

    def has_add_permission(self, request, *args):
        return self._is_staff(request)

    def has_change_permission(self, request, obj=None):
        return self._is_staff(request)

    def has_delete_permission(self, request, obj=None):
        return self._is_staff(request)


# --- display helpers --------------------------------------------------------------------------

def badge(text: str, kind: str, title: str = "") -> str:
    """A small coloured label; kinds: ok, failed, untested, running, muted, default."""
    return format_html('<span class="llmconn-badge llmconn-badge--{}" title="{}">{}</span>',
                       kind, title, text)


def audit_history_url(target_type: str, target_id) -> str:
    """The audit list filtered to one target (what each change page's History shows)."""
    query = urlencode({"target_type": target_type, "target_id": str(target_id)})
    return f"{reverse('admin:audit_auditevent_changelist')}?{query}"


class AuditHistoryMixin:
    """ModelAdmin mixin: the History button and a `history_display` field open the audit log
    filtered to the object (audit target type `audit_target_type`), not Django's own history."""

    audit_target_type: str = ""

    @admin.display(description="History")
    def history_display(self, obj) -> str:
        return format_html('<a href="{}">Audit events of this {}</a>',
                           audit_history_url(self.audit_target_type, obj.pk),
                           self.audit_target_type)

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(audit_history_url(self.audit_target_type, unquote(object_id)))


class JSONObjectField(forms.CharField):
    """A JSON object typed into a textarea (e.g. `default_params`): "" is {}; anything else
    must parse as a JSON object. What the object may hold is the services' to check (so the
    admin says what the API says)."""

    def __init__(self, *, placeholder: str = "", **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 16384)
        kwargs.setdefault("widget", forms.Textarea(attrs={
            "rows": 2, "class": "vLargeTextField llmconn-wide llmconn-json",
            "spellcheck": "false", "placeholder": placeholder}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value) if value else ""
        return value

    def to_python(self, value):
        text = (super().to_python(value) or "").strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValidationError('Enter a JSON object, e.g. {"temperature": 0.2}.',
                                  code="invalid")
        return parsed

    def has_changed(self, initial, data):
        try:
            return self.to_python(data) != (initial or {})
        except ValidationError:
            return True


class DatalistInput(forms.TextInput):
    """A text input with suggestions (<datalist>): pick one or type anything else."""

    def __init__(self, options=(), attrs=None):
        super().__init__(attrs)
        self.options = list(options)

    def render(self, name, value, attrs=None, renderer=None):
        attrs = dict(attrs or {})
        list_id = f"{attrs.get('id') or 'id_' + name}_options"
        attrs["list"] = list_id
        attrs.setdefault("autocomplete", "off")
        html = super().render(name, value, attrs, renderer)
        options = format_html_join("", '<option value="{}"></option>', ((o,) for o in self.options))
        return format_html('{}<datalist id="{}">{}</datalist>', html, list_id, options)
