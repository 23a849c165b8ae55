"""The caller's own settings: /api/v1/me/defaults/{role}/ and /api/v1/me/api-keys/.

Any signed-in user. A user's default per role (a shared connection or one of their personal
connections) is what their personal gateway keys call first, then the system default
(README "People and defaults"). Personal keys never reach a workspace's bindings.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from llmconn.errors import NotFound

from .. import services
from ..models import Role, UserDefault, WorkspaceAPIKey
from ..resolution import ResolutionError, personal_scope, resolve_uncached
from .serializers import APIKeyInputSerializer, APIKeyOutputSerializer

ERROR = OpenApiResponse(description="The one error shape.")


class UserDefaultInputSerializer(serializers.Serializer):
    connection = serializers.UUIDField(help_text="A shared connection or one of yours.")
    model = serializers.CharField(max_length=200, required=False, allow_null=True,
                                  allow_blank=True, default=None,
                                  help_text="Null: the connection's default model.")


class UserDefaultOutputSerializer(serializers.Serializer):
    role = serializers.CharField()
    connection = serializers.UUIDField(allow_null=True)
    connection_name = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    resolved = serializers.DictField(
        help_text="What your personal keys call for this role now (provider, connection, "
                  "model, source user_default|system_default), or {\"error\": ...}.")


def _role(role: str) -> str:
    if role not in Role.values:
        raise NotFound(f"Unknown role {role!r}: roles are {', '.join(Role.values)}.")
    return role


def _default_body(user, role: str) -> dict:
    default = UserDefault.objects.select_related("connection").filter(user=user,
                                                                      role=role).first()
    try:
        resolved = resolve_uncached(workspace_id=personal_scope(user.pk), role=role).summary()
    except ResolutionError as exc:
        resolved = {"role": role, "error": {"code": exc.code, "message": exc.message}}
    return {"role": role,
            "connection": str(default.connection_id) if default else None,
            "connection_name": default.connection.name if default else None,
            "model": default.model if default else None,
            "resolved": resolved}


class MyDefaultView(APIView):
    """GET|PUT|DELETE /api/v1/me/defaults/{role}/: your default connection and model."""

    permission_classes = [IsAuthenticated]

    @extend_schema(summary="Your default for a role", responses={
        200: UserDefaultOutputSerializer, 401: ERROR, 404: ERROR})
    def get(self, request, role):
        return Response(_default_body(request.user, _role(role)))

    @extend_schema(summary="Set your default for a role", request=UserDefaultInputSerializer,
                   responses={200: UserDefaultOutputSerializer, 400: ERROR, 401: ERROR,
                              404: ERROR})
    def put(self, request, role):
        _role(role)
        data = UserDefaultInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.user_default_set(user=request.user, role=role,
                                  connection=str(data.validated_data["connection"]),
                                  model=data.validated_data.get("model"), actor=request.user)
        return Response(_default_body(request.user, role))

    @extend_schema(summary="Remove your default for a role (the system default applies)",
                   responses={204: None, 401: ERROR, 404: ERROR})
    def delete(self, request, role):
        services.user_default_clear(user=request.user, role=_role(role), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MyAPIKeysView(APIView):
    """GET|POST /api/v1/me/api-keys/: your personal gateway keys (`lck_...`)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(summary="List your personal gateway keys",
                   responses={200: APIKeyOutputSerializer(many=True), 401: ERROR})
    def get(self, request):
        keys = WorkspaceAPIKey.objects.filter(user=request.user).select_related(
            "created_by").order_by("-created_at")
        return Response(APIKeyOutputSerializer(keys, many=True).data)

    @extend_schema(summary="Create a personal gateway key (shown once)",
                   request=APIKeyInputSerializer,
                   responses={201: APIKeyOutputSerializer, 400: ERROR, 401: ERROR})
    def post(self, request):
        data = APIKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.personal_api_key_create(user=request.user, **data.validated_data)
        return Response({**APIKeyOutputSerializer(key).data, "key": raw},
                        status=status.HTTP_201_CREATED)


class MyAPIKeyView(APIView):
    """DELETE /api/v1/me/api-keys/{id}/: revoke one of your keys (refused from the next call)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(summary="Revoke a personal gateway key",
                   responses={204: None, 401: ERROR, 404: ERROR})
    def delete(self, request, key_id):
        key = get_object_or_404(WorkspaceAPIKey, user=request.user, pk=key_id)
        services.api_key_revoke(api_key=key, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
