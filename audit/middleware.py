"""Opens the audit context (IP, user agent, the request) for every HTTP request."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .context import AuditContext, _current, client_ip

MAX_USER_AGENT = 512


def _context_for(request) -> AuditContext:
    return AuditContext(
        request=request,
        ip=client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT") or "")[:MAX_USER_AGENT],
    )


class AuditContextMiddleware:
    """Sets the audit contextvar for the request; works under WSGI and ASGI.

    https://docs.djangoproject.com/en/5.2/topics/http/middleware/#asynchronous-support
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = _current.set(_context_for(request))
        try:
            return self.get_response(request)
        finally:
            _current.reset(token)

    async def __acall__(self, request):
        token = _current.set(_context_for(request))
        try:
            return await self.get_response(request)
        finally:
            _current.reset(token)
