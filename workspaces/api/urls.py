"""Routes of this app under /api/v1/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .usage import BudgetViewSet, UsageView
from .views import SystemDefaultViewSet, WorkspaceViewSet

router = SimpleRouter()
router.register("workspaces", WorkspaceViewSet, basename="workspace")
router.register("system-defaults", SystemDefaultViewSet, basename="system-default")
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = [path("usage/", UsageView.as_view(), name="usage"), *router.urls]
