"""Audit log API: staff read the events, filtered by target and action."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.permissions import IsAdminUser

from ..models import AuditEvent
from ..selectors import audit_event_list
from .serializers import AuditEventOutputSerializer


@extend_schema(parameters=[
    OpenApiParameter("target", str, description="Target id, name, or type:id (e.g. connection:<uuid>)."),
    OpenApiParameter("action", str, description="Exact action (connection.update) or a prefix ending in '.'."),
])
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """GET /api/v1/audit-events/ (staff only), newest first."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventOutputSerializer
    permission_classes = [IsAdminUser]
    filter_backends: list = []

    def get_queryset(self):
        params = self.request.query_params
        return audit_event_list(target=params.get("target") or None,
                                action=params.get("action") or None)
