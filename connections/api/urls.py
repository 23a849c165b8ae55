"""Routes of this app under /api/v1/. Other modules' explicit paths go in `urlpatterns`."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .secret_rotation import RollbackSecretView, RotateSecretView
from .diagnostics import (
    ConnectionModelsView,
    ConnectionTestDetailView,
    ConnectionTestListCreateView,
    ConnectionTestStartView,
    DiscoverModelsView,
)
from .views import ConnectionViewSet

router = SimpleRouter()
router.register("connections", ConnectionViewSet, basename="connection")

urlpatterns: list = [
    path("connections/<uuid:pk>/rotate-secret/", RotateSecretView.as_view(),
         name="connection-rotate-secret"),
    path("connections/<uuid:pk>/rollback-secret/", RollbackSecretView.as_view(),
         name="connection-rollback-secret"),
    # Tests and model discovery (connections/api/diagnostics.py).
    path("connections/<uuid:pk>/test/", ConnectionTestStartView.as_view(),
         name="connection-test"),
    path("connections/<uuid:pk>/discover-models/", DiscoverModelsView.as_view(),
         name="connection-discover-models"),
    path("connections/<uuid:pk>/models/", ConnectionModelsView.as_view(),
         name="connection-models"),
    path("connection-tests/", ConnectionTestListCreateView.as_view(), name="connection-tests"),
    path("connection-tests/<uuid:pk>/", ConnectionTestDetailView.as_view(),
         name="connection-test-detail"),
] + router.urls
