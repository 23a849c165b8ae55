"""Routes of this app under /api/v1/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .me import MyAPIKeysView, MyAPIKeyView, MyDefaultView
from .usage import BudgetViewSet, UsageView
from .views import SystemDefaultViewSet, WorkspaceViewSet

router = SimpleRouter()
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("system-defaults", SystemDefaultViewSet, basename="system-default")
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = [
    path("usage/", UsageView.as_view(), name="usage"),
    path("me/defaults/<str:role>/", MyDefaultView.as_view(), name="me-default"),
    path("me/api-keys/", MyAPIKeysView.as_view(), name="me-api-keys"),
    path("me/api-keys/<int:key_id>/", MyAPIKeyView.as_view(), name="me-api-key"),
    *router.urls,
]
