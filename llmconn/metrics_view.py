"""`GET /metrics`: Prometheus' text format, for staff (session or token) or for the addresses in
LLMCONN_METRICS_ALLOW (a Prometheus server scraping without credentials). Everyone else gets the
JSON error shape: 401 without credentials, 403 with a non-staff user's."""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from . import metrics


class StaffOrAllowedAddress(BasePermission):
    """Staff users, or a peer address in LLMCONN_METRICS_ALLOW (REMOTE_ADDR: the direct peer;
    forwarded-for headers are not trusted)."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        if user and user.is_authenticated and user.is_staff:
            return True
        return metrics.address_allowed(request.META.get("REMOTE_ADDR"))


class _JSONErrors(BaseContentNegotiation):
    """Refusals in JSON whatever the scraper's Accept header asks for (never a 406)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsView(APIView):
    """The scrape endpoint (see llmconn/metrics.py for what is exported)."""

    permission_classes = [StaffOrAllowedAddress]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONErrors

    @extend_schema(exclude=True)  # Prometheus' format, not part of the JSON API
    def get(self, request):
        body, content_type = metrics.render()
        return HttpResponse(body, content_type=content_type)


metrics_view = never_cache(MetricsView.as_view())
