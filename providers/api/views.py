"""Read-only catalog endpoints: providers and presets (any signed-in user may read them)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, viewsets
from rest_framework.response import Response

from llmconn.errors import NotFound
from providers.base import all_presets, all_providers, find_provider

from .serializers import PresetSerializer, ProviderSerializer


class ProviderViewSet(viewsets.ViewSet):
    """The provider types connections can use, with their auth methods and fields."""

    permission_classes = [permissions.IsAuthenticated]
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_.-]+"
    serializer_class = ProviderSerializer

    @extend_schema(responses=ProviderSerializer(many=True))
    def list(self, request):
        return Response([p.as_dict() for p in all_providers()])

    @extend_schema(
        parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH)],
        responses=ProviderSerializer,
    )
    def retrieve(self, request, name: str):
        provider = find_provider(name)
        if provider is None:
            raise NotFound(f"No provider named {name!r}: see /api/v1/providers/.")
        return Response(provider.as_dict())


class PresetViewSet(viewsets.ViewSet):
    """Named starting points for connections (Ollama on this machine, OpenRouter...)."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = PresetSerializer

    @extend_schema(responses=PresetSerializer(many=True))
    def list(self, request):
        return Response([p.as_dict() for p in all_presets()])
