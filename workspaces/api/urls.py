"""Routes of this app under /api/v1/."""

from rest_framework.routers import SimpleRouter

from .views import SystemDefaultViewSet, WorkspaceViewSet

router = SimpleRouter()
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("system-defaults", SystemDefaultViewSet, basename="system-default")

urlpatterns = router.urls
