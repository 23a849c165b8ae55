"""Routes of this app under /api/v1/."""

from django.urls import path

from .views import AuditEventViewSet

urlpatterns: list = [
    path("audit-events/", AuditEventViewSet.as_view({"get": "list"}), name="audit-event-list"),
    path("audit-events/<int:pk>/", AuditEventViewSet.as_view({"get": "retrieve"}),
         name="audit-event-detail"),
]
