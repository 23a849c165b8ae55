"""Workspaces API: workspaces and bindings, resolution, API keys, members, system defaults.

Who may do what: staff everything; a workspace's managers change its bindings and API keys;
its members read it; anyone else gets 404 (the workspace's existence is not disclosed).
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from llmconn.errors import NotFound

from .. import selectors, services
from ..models import Membership, Role, SystemDefault, Workspace, WorkspaceAPIKey
from .serializers import (
    APIKeyInputSerializer,
    APIKeyOutputSerializer,
    MembershipInputSerializer,
    MembershipOutputSerializer,
    MembershipUpdateSerializer,
    SystemDefaultInputSerializer,
    SystemDefaultOutputSerializer,
    WorkspaceInputSerializer,
    WorkspaceOutputSerializer,
)

MANAGE = ("staff", "manager")


def _require(access: str | None, allowed: tuple[str, ...], what: str) -> None:
    if access not in allowed:
        raise PermissionDenied(f"Only {' or '.join(allowed)} may {what}.")


class WorkspaceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                       viewsets.GenericViewSet):
    """/api/v1/workspaces/ and /api/v1/workspaces/{slug}/ with resolved, api-keys, members."""

    queryset = Workspace.objects.none()
    serializer_class = WorkspaceOutputSerializer
    permission_classes = [IsAuthenticated]
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return selectors.workspace_list_for(user=self.request.user)

    def _access(self, workspace) -> str | None:
        return selectors.workspace_access(user=self.request.user, workspace=workspace)

    @extend_schema(request=WorkspaceInputSerializer, responses=WorkspaceOutputSerializer)
    def create(self, request):
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may create workspaces.")
        data = WorkspaceInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        workspace = services.workspace_create(actor=request.user, **data.validated_data)
        return Response(WorkspaceOutputSerializer(workspace).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=WorkspaceInputSerializer, responses=WorkspaceOutputSerializer)
    def partial_update(self, request, slug=None):
        workspace = self.get_object()
        access = self._access(workspace)
        data = WorkspaceInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if access != "staff":
            _require(access, MANAGE, "change a workspace's bindings")
            if set(changes) - {"bindings"}:
                raise PermissionDenied("Managers may change bindings only; ask staff to rename.")
        workspace, warnings = services.workspace_update(
            workspace=workspace, actor=request.user, **changes)
        workspace = self.get_queryset().get(pk=workspace.pk)
        return Response({**WorkspaceOutputSerializer(workspace).data, "warnings": warnings})

    @extend_schema(request=WorkspaceInputSerializer, responses=WorkspaceOutputSerializer)
    def update(self, request, slug=None):
        return self.partial_update(request, slug=slug)

    def destroy(self, request, slug=None):
        workspace = self.get_object()
        _require(self._access(workspace), ("staff",), "delete workspaces")
        services.workspace_delete(workspace=workspace, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=OpenApiTypes.OBJECT,
                   description='{"workspace": slug, "roles": {role: resolution | {"error"}}}')
    @action(detail=True, methods=["get"])
    def resolved(self, request, slug=None):
        """What each role resolves to now: provider, connection name and model (no secret)."""
        workspace = self.get_object()
        return Response({"workspace": workspace.slug,
                         "roles": selectors.resolved_roles(workspace=workspace)})

    @extend_schema(request=APIKeyInputSerializer, responses=APIKeyOutputSerializer)
    @action(detail=True, methods=["get", "post"], url_path="api-keys")
    def api_keys(self, request, slug=None):
        """List the workspace's API keys (without secret) or create one (shown once)."""
        workspace = self.get_object()
        _require(self._access(workspace), MANAGE, "manage API keys")
        if request.method == "GET":
            keys = workspace.api_keys.select_related("created_by").order_by("-created_at")
            return Response(APIKeyOutputSerializer(keys, many=True).data)
        data = APIKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.api_key_create(workspace=workspace, actor=request.user,
                                           **data.validated_data)
        return Response({**APIKeyOutputSerializer(key).data, "key": raw},
                        status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["delete"], url_path=r"api-keys/(?P<key_id>[0-9]+)")
    def api_key_revoke(self, request, slug=None, key_id=None):
        """Revoke an API key (204); the gateway refuses it from the next call on."""
        workspace = self.get_object()
        _require(self._access(workspace), MANAGE, "manage API keys")
        key = get_object_or_404(WorkspaceAPIKey, workspace=workspace, pk=key_id)
        services.api_key_revoke(api_key=key, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=MembershipInputSerializer, responses=MembershipOutputSerializer)
    @action(detail=True, methods=["get", "post"])
    def members(self, request, slug=None):
        """List members (staff, managers) or add one / change their role (staff)."""
        workspace = self.get_object()
        access = self._access(workspace)
        if request.method == "GET":
            _require(access, MANAGE, "list members")
            rows = workspace.memberships.select_related("user").order_by("user__username")
            return Response(MembershipOutputSerializer(rows, many=True).data)
        _require(access, ("staff",), "manage members")
        data = MembershipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set(workspace=workspace, actor=request.user,
                                             **data.validated_data)
        return Response(MembershipOutputSerializer(membership).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipOutputSerializer)
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<member_id>[0-9]+)")
    def member_detail(self, request, slug=None, member_id=None):
        """Change a member's role or remove them (staff)."""
        workspace = self.get_object()
        _require(self._access(workspace), ("staff",), "manage members")
        membership = get_object_or_404(Membership, workspace=workspace, pk=member_id)
        if request.method == "DELETE":
            services.membership_delete(membership=membership, actor=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        data = MembershipUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set(workspace=workspace, user=membership.user,
                                             actor=request.user, **data.validated_data)
        return Response(MembershipOutputSerializer(membership).data)


class SystemDefaultViewSet(viewsets.GenericViewSet):
    """/api/v1/system-defaults/: the connection per role for workspaces that bind none.

    Any signed-in user may read them (they explain what `null` in a binding means); staff set
    (PUT/PATCH) and remove (DELETE) them.
    """

    permission_classes = [IsAuthenticated]
    serializer_class = SystemDefaultOutputSerializer
    pagination_class = None
    filter_backends: list = []
    lookup_field = "role"
    lookup_value_regex = r"[a-z_]+"

    @extend_schema(operation_id="v1_system_defaults_list", responses=OpenApiTypes.OBJECT,
                   description="{role: {connection, connection_name, model} | null}")
    def list(self, request):
        return Response(selectors.system_defaults())

    def retrieve(self, request, role=None):
        if role not in Role.values:
            raise NotFound(f"Unknown role {role!r}.")
        return Response({"role": role, **(selectors.system_defaults()[role] or
                                          {"connection": None, "connection_name": None,
                                           "model": None})})

    @extend_schema(request=SystemDefaultInputSerializer, responses=SystemDefaultOutputSerializer)
    def update(self, request, role=None):
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may set system defaults.")
        if role not in Role.values:
            raise NotFound(f"Unknown role {role!r}.")
        data = SystemDefaultInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        _, warnings = services.system_default_set(
            role=role, connection=str(data.validated_data["connection"]),
            model=data.validated_data.get("model"), actor=request.user)
        return Response({"role": role, **selectors.system_defaults()[role],
                         "warnings": warnings})

    @extend_schema(request=SystemDefaultInputSerializer, responses=SystemDefaultOutputSerializer)
    def partial_update(self, request, role=None):
        return self.update(request, role=role)

    def destroy(self, request, role=None):
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may remove system defaults.")
        if role not in Role.values:
            raise NotFound(f"Unknown role {role!r}.")
        if not SystemDefault.objects.filter(role=role).exists():
            raise NotFound(f"No system default for role {role!r}.")
        services.system_default_clear(role=role, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
