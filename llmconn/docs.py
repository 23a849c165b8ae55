"""The OpenAPI schema and Swagger UI, for signed-in users only, served entirely by this app.

Swagger UI's files come from drf-spectacular-sidecar through our own static files (no CDN:
nothing from another origin runs in ours). https://drf-spectacular.readthedocs.io/en/latest/
settings.html (SWAGGER_UI_DIST = "SIDECAR").
"""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.urls import reverse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import exceptions
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer


class SchemaView(SpectacularAPIView):
    """GET /api/schema/: the OpenAPI document (YAML, or JSON with ?format=json)."""

    permission_classes = [IsAuthenticated]

    def handle_exception(self, exc):
        # Errors in the API's one JSON shape, whatever format the schema was asked in.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


class SwaggerView(SpectacularSwaggerView):
    """GET /api/docs/: Swagger UI; people who are not signed in go to the admin login."""

    permission_classes = [IsAuthenticated]

    def handle_exception(self, exc):
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            return redirect_to_login(self.request.get_full_path(), reverse("admin:login"))
        return super().handle_exception(exc)
