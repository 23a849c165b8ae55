"""Top-level URLs. Each app owns its routes under /api/v1/ in `<app>/api/urls.py`."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from . import errors, health
from .docs import SchemaView, SwaggerView
from .metrics_view import metrics_view

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
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("api-auth/", include("rest_framework.urls")),
    # What uvicorn prints and the admin's "View site" link lead here.
    path("", RedirectView.as_view(url="/admin/", permanent=False), name="root"),
    # Last: any other path under /api/ is the API's JSON 404, also with DEBUG on (where Django
    # would show its HTML page listing every URL instead of handler404).
    re_path(r"^api/", errors.api_not_found, name="api-not-found"),
]
