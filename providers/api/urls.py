"""Routes of this app under /api/v1/."""

from rest_framework.routers import SimpleRouter

from .views import PresetViewSet, ProviderViewSet

router = SimpleRouter()
router.register("providers", ProviderViewSet, basename="provider")
router.register("presets", PresetViewSet, basename="preset")

urlpatterns: list = [] + router.urls
