"""Routes of this app under /api/v1/. Other modules' explicit paths go in `urlpatterns`."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .rotation import RollbackSecretView, RotateSecretView
from .views import ConnectionViewSet

router = SimpleRouter()
router.register("connections", ConnectionViewSet, basename="connection")

urlpatterns: list = [
    path("connections/<uuid:pk>/rotate-secret/", RotateSecretView.as_view(),
         name="connection-rotate-secret"),
    path("connections/<uuid:pk>/rollback-secret/", RollbackSecretView.as_view(),
         name="connection-rollback-secret"),
] + router.urls
