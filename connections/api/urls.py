"""Routes of this app under /api/v1/. Other modules' explicit paths go in `urlpatterns`."""

from rest_framework.routers import SimpleRouter

from .views import ConnectionViewSet

router = SimpleRouter()
router.register("connections", ConnectionViewSet, basename="connection")

urlpatterns: list = [
] + router.urls
