"""Top-level URLs. Each app owns its routes under /api/v1/ in `<app>/api/urls.py`."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import health
from .metrics_view import metrics_view

admin.site.site_header = "llmconn administration"
admin.site.site_title = "llmconn admin"
admin.site.index_title = "Connections, workspaces and audit log"

handler400 = "llmconn.errors.json_400"
handler404 = "llmconn.errors.json_404"
handler500 = "llmconn.errors.json_500"

api_v1 = [
    path("", include("providers.api.urls")),
    path("", include("connections.api.urls")),
    path("", include("workspaces.api.urls")),
    path("", include("audit.api.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api-auth/", include("rest_framework.urls")),
    path("v1/", include("workspaces.gateway_urls")),
]
