"""One family of domain errors and one place that turns every failure into HTTP.

Services raise `ApplicationError` subclasses (or Django's ValidationError from `full_clean()`);
`api_exception_handler` renders them, DRF's own exceptions and anything unexpected as
`{"error": {"code", "message", "fields"}}` with a fitting status. No traceback or upstream text
reaches a client. https://www.django-rest-framework.org/api-guide/exceptions/
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A domain error with a stable code, a message for people and optional per-field errors."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None,
                 extra: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.fields = fields or {}
        self.extra = extra or {}


class ValidationFailed(ApplicationError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "invalid"


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class ServiceUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message, "fields": fields or {}, **extra}}


def _flatten(detail) -> object:
    """DRF ErrorDetail trees → plain strings/lists/dicts."""
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        flat = [_flatten(v) for v in detail]
        return flat
    return str(detail)


def validation_fields(exc: DjangoValidationError) -> dict:
    """Django ValidationError → {field: [messages]} ("non_field_errors" for the rest)."""
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if k == "__all__" else k): [str(m) for e in v for m in e.messages]
            for k, v in exc.error_dict.items()
        }
    return {"non_field_errors": [str(m) for m in exc.messages]}


def error_text(exc: Exception) -> str:
    """One line for a report (imports, commands): a ValidationError's messages by field, else
    the error's message."""
    if isinstance(exc, DjangoValidationError):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()) \
            if hasattr(exc, "error_dict") else " ".join(exc.messages)
    return getattr(exc, "message", str(exc))


def _first_message(fields: dict) -> str:
    for name, value in fields.items():
        while isinstance(value, (list, dict)) and value:
            value = value[0] if isinstance(value, list) else next(iter(value.values()))
        if isinstance(value, str):
            return value if name == "non_field_errors" else f"{name}: {value}"
    return "The request is invalid."


def api_exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: every failure in the one error shape, never a traceback."""
    headers = {}
    if isinstance(exc, ApplicationError):
        return Response(
            error_body(exc.code, exc.message, exc.fields, **exc.extra), status=exc.status_code
        )
    if isinstance(exc, DjangoValidationError):
        fields = validation_fields(exc)
        return Response(error_body("invalid", _first_message(fields), fields), status=400)
    if isinstance(exc, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
        return Response(too_large_body(exc), status=413)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed,
                        drf_exceptions.PermissionDenied)):
        _record_denied(context)
    if isinstance(exc, drf_exceptions.APIException):
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        if isinstance(exc, drf_exceptions.ValidationError):
            detail = _flatten(exc.detail)
            fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
            return Response(
                error_body("invalid", _first_message(fields), fields), status=400, headers=headers
            )
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        return Response(
            error_body(code, str(exc.detail)), status=exc.status_code, headers=headers
        )
    from .outage import RETRY_AFTER_S, error_body as outage_body, is_database_outage

    if is_database_outage(exc):  # 503, never a 500 with the driver's text
        logger.error("Database unavailable in %s (%s)", context.get("view").__class__.__name__,
                     type(exc).__name__)
        return Response(outage_body(), status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
    logger.exception("Unhandled error in %s", context.get("view").__class__.__name__)
    return Response(
        error_body("server_error", "An unexpected error occurred; it has been logged."),
        status=500,
    )


def too_large_body(exc: Exception) -> dict:
    """The 413 answer for a body over Django's upload limits (DATA_UPLOAD_MAX_MEMORY_SIZE...)."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_body("request_too_large",
                          f"The request body is larger than the limit of {limit} bytes.")
    return error_body("request_too_large", "The request has too many fields or files.")


def _record_denied(context) -> None:
    """Write a "denied" audit event; a failure to write it is logged, never shown."""
    from audit.services import audit_record_denied

    try:
        audit_record_denied(request=context.get("request"), view=context.get("view"))
    except Exception:  # noqa: BLE001 - the 401/403 answer matters more than the record
        logger.exception("Could not record a denied attempt in the audit log")


def json_404(request, exception=None):
    """handler404 for the whole site: JSON under the API prefixes, Django's page elsewhere."""
    from django.views.defaults import page_not_found

    if _is_api(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return page_not_found(request, exception)


def api_not_found(request, *args, **kwargs):
    """Catch-all under /api/: the JSON error shape with 404, whatever DEBUG says."""
    from django.http import HttpResponsePermanentRedirect
    from django.urls import Resolver404, resolve

    if request.method in ("GET", "HEAD") and not request.path.endswith("/"):
        try:  # APPEND_SLASH as CommonMiddleware does it, which a catch-all would defeat
            if resolve(request.path + "/").func is not api_not_found:
                return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
        except Resolver404:
            pass
    return JsonResponse(error_body("not_found", "Not found: no such API endpoint."), status=404)


def json_500(request):
    """handler500: JSON under the API prefixes (no traceback), Django's page elsewhere."""
    import sys

    from django.views.defaults import server_error

    from .outage import outage_response

    outage = outage_response(request, sys.exc_info()[1])  # set when called for an exception
    if outage is not None:
        return outage
    if _is_api(request):
        return JsonResponse(
            error_body("server_error", "An unexpected error occurred; it has been logged."),
            status=500,
        )
    return server_error(request)


def json_400(request, exception=None):
    """handler400 (e.g. a bad Host header or malformed request): JSON under the API prefixes."""
    from django.views.defaults import bad_request

    if _is_api(request):
        if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
            return JsonResponse(too_large_body(exception), status=413)
        return JsonResponse(error_body("bad_request", "Bad request."), status=400)
    return bad_request(request, exception)


def _is_api(request) -> bool:
    return request.path.startswith(("/api/", "/v1/"))
