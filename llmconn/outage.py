"""A database outage answers 503 in the caller's error format, never a 500 with a traceback.

`DatabaseOutageMiddleware.process_exception` catches what a view raised (the /v1 gateway's
async views, /readyz's neighbours, the admin); DRF views are covered by
llmconn.errors.api_exception_handler, which asks `outage_response` first; handler500 too, for
what fails outside a view. Connection refused, a server gone away or a closed connection
(Django's OperationalError / InterfaceError) count as an outage; integrity or programming
errors do not: they stay bugs (500, logged).
https://docs.djangoproject.com/en/5.2/topics/http/middleware/#process-exception
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

logger = logging.getLogger(__name__)

MESSAGE = "The database is unavailable: try again shortly."
RETRY_AFTER_S = 10


def is_database_outage(exc: BaseException | None) -> bool:
    """True when `exc` (or what it wraps) says the database cannot be reached."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (OperationalError, InterfaceError)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def error_body() -> dict:
    """The API's one error shape for an outage."""
    return {"error": {"code": "database_unavailable", "message": MESSAGE, "fields": {}}}


def outage_response(request, exc: BaseException | None):
    """A 503 in the format of the path asked (None unless `exc` is a database outage)."""
    if not is_database_outage(exc):
        return None
    # The exception text can name the host, user and database: only its class is logged.
    logger.error("Database unavailable while serving %s (%s)", request.path,
                 type(exc).__name__)
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    path = request.path
    if path.startswith("/v1/"):
        body = {"error": {"message": MESSAGE, "type": "server_error",
                          "code": "database_unavailable", "param": None}}
        return JsonResponse(body, status=503, headers=headers)
    if path.startswith("/api/"):
        return JsonResponse(error_body(), status=503, headers=headers)
    return HttpResponse(f"503 Service Unavailable. {MESSAGE}\n", status=503,
                        content_type="text/plain; charset=utf-8", headers=headers)


class DatabaseOutageMiddleware(MiddlewareMixin):
    """Turns a database outage raised by a view into a 503 (sync and async views)."""

    def process_exception(self, request, exception):
        return outage_response(request, exception)
