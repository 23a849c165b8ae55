"""The connections API: CRUD, from-preset, set-default, dependents, move-bindings.

Views are thin: the input serializer checks shape, one service call decides and writes, the
output serializer renders a row from `connection_list_detailed()` (constant query count).
"""

from __future__ import annotations

from django.db.models import Q
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import filters, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from connections.filters import BoundedSearchFilter, ConnectionFilter
from connections.models import Connection
from connections.selectors import (
    connection_dependents,
    connection_list,
    connection_list_detailed,
)
from connections.services import (
    connection_create,
    connection_create_from_preset,
    connection_delete,
    connection_move_bindings,
    connection_set_default,
    connection_update,
)
from llmconn.errors import ValidationFailed

from .permissions import IsStaffOrManagerReading, is_staff, personal_enabled, reads_shared
from .serializers import (
    ConnectionInputSerializer,
    ConnectionSerializer,
    DependentsSerializer,
    ErrorSerializer,
    FromPresetInputSerializer,
    MoveBindingsInputSerializer,
    MoveBindingsResultSerializer,
)

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

# The values a PUT resets when it leaves them out (PUT replaces the non-secret settings;
# credentials left out are kept, as with PATCH).
PUT_DEFAULTS = {"auth_method": None, "base_url": None, "default_model": "", "config": {},
                "is_active": True, "input_cost_per_million_tokens": None,
                "output_cost_per_million_tokens": None, "timeout_seconds": None,
                "default_params": {}}

ERROR = OpenApiResponse(ErrorSerializer, description="The one error shape.")
WRITE_ERRORS = {400: ERROR, 401: ERROR, 403: ERROR}
DETAIL_ERRORS = {401: ERROR, 403: ERROR, 404: ERROR}


@extend_schema_view(
    list=extend_schema(
        summary="List connections",
        description="Staff see every shared connection with config and credential hints, and "
                    "users' personal connections without them; other users see their own "
                    "personal connections in full and the active shared ones without config "
                    "or hints (with personal connections off: workspace managers only).",
        responses={200: ConnectionSerializer(many=True), 401: ERROR, 403: ERROR},
    ),
    retrieve=extend_schema(summary="Read a connection",
                           responses={200: ConnectionSerializer, **DETAIL_ERRORS}),
    create=extend_schema(summary="Create a connection", request=ConnectionInputSerializer,
                         responses={201: ConnectionSerializer, **WRITE_ERRORS}),
    update=extend_schema(
        summary="Replace a connection's settings",
        description="Non-secret settings left out take their defaults; credentials left out "
                    "are kept.",
        request=ConnectionInputSerializer,
        responses={200: ConnectionSerializer, **WRITE_ERRORS, 404: ERROR}),
    partial_update=extend_schema(
        summary="Change a connection",
        description="Credentials left out are kept; a credential sent replaces that secret; "
                    "null removes it. Masked-looking values are refused.",
        request=ConnectionInputSerializer,
        responses={200: ConnectionSerializer, **WRITE_ERRORS, 404: ERROR}),
    destroy=extend_schema(
        summary="Delete a connection",
        responses={204: None, **DETAIL_ERRORS,
                   409: OpenApiResponse(ErrorSerializer, description=(
                       "Still used: `error.bindings` lists where; nothing was deleted."))}),
)
class ConnectionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Provider connections: staff manage shared ones; workspace managers (and, with personal
    connections on, every signed-in user) list and read the active shared ones; users manage
    their own personal connections."""

    queryset = Connection.objects.all()
    serializer_class = ConnectionSerializer
    permission_classes = [IsStaffOrManagerReading]
    manager_actions = ("list", "retrieve")
    personal_actions = ("list", "retrieve", "create", "update", "partial_update", "destroy",
                        "from_preset", "dependents")
    lookup_value_regex = UUID_PATTERN
    filter_backends = [DjangoFilterBackend, BoundedSearchFilter, filters.OrderingFilter]
    filterset_class = ConnectionFilter
    search_fields = ["name", "provider", "default_model", "base_url"]
    ordering_fields = ["name", "provider", "status", "created_at", "updated_at",
                       "last_tested_at"]
    ordering = ["name"]

    def get_queryset(self):
        qs = connection_list_detailed() if self.action in ("list", "retrieve") \
            else connection_list()  # writes re-read with _present()
        if is_staff(self.request):
            return qs
        visible = Q(pk__in=[])
        if personal_enabled():
            visible |= Q(owner_id=self.request.user.pk)
        if reads_shared(self.request):
            visible |= Q(owner__isnull=True, is_active=True)
        return qs.filter(visible)

    def get_serializer_class(self):
        # By method, not action, so that the browsable API's forms get the input shape.
        method = getattr(self.request, "method", "GET")
        if self.action == "from_preset" and method == "POST":
            return FromPresetInputSerializer
        if self.action == "move_bindings" and method == "POST":
            return MoveBindingsInputSerializer
        if method in ("POST", "PUT", "PATCH") and self.action in (
                "create", "update", "partial_update", "retrieve", "list", None):
            return ConnectionInputSerializer
        return ConnectionSerializer  # rows the caller may not see in full are trimmed by it

    def _present(self, connection: Connection, status_code: int = status.HTTP_200_OK) -> Response:
        """The output representation of a connection just written (re-read with its counts)."""
        fresh = connection_list_detailed().get(pk=connection.pk)
        data = ConnectionSerializer(fresh, context=self.get_serializer_context()).data
        return Response(data, status=status_code)

    def _input(self, serializer_class, *, partial: bool = False) -> dict:
        serializer = serializer_class(data=self.request.data, partial=partial,
                                      context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def _owner(self):
        """Staff create shared connections; everyone else their own personal ones."""
        return None if is_staff(self.request) else self.request.user

    def create(self, request, *args, **kwargs):
        data = self._input(ConnectionInputSerializer)
        connection = connection_create(actor=request.user, owner=self._owner(), **data)
        return self._present(connection, status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        connection = self.get_object()
        data = self._input(ConnectionInputSerializer, partial=partial)
        if connection.owner_id not in (None, request.user.pk) and (
                not partial or set(request.data) != {"is_active"} or data.get("is_active")):
            raise PermissionDenied("Staff may only deactivate another user's personal "
                                   "connection (PATCH {\"is_active\": false}).")
        credentials = data.pop("credentials", None)
        changes = data if partial else {**PUT_DEFAULTS, **data}
        connection = connection_update(connection=connection, actor=request.user,
                                       credentials=credentials, **changes)
        return self._present(connection)

    def destroy(self, request, *args, **kwargs):
        connection_delete(connection=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Create a connection from a preset",
        request=FromPresetInputSerializer,
        responses={201: ConnectionSerializer, **WRITE_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="from-preset", url_name="from-preset")
    def from_preset(self, request):
        data = self._input(FromPresetInputSerializer)
        connection = connection_create_from_preset(actor=request.user, owner=self._owner(),
                                                   **data)
        return self._present(connection, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Make this connection the default for its provider",
        description="The previous default of the provider stops being one (exactly one "
                    "default per provider).",
        request=None,
        responses={200: ConnectionSerializer, 400: ERROR, **DETAIL_ERRORS, 409: ERROR},
    )
    @action(detail=True, methods=["post"], url_path="set-default", url_name="set-default")
    def set_default(self, request, pk=None):
        connection = connection_set_default(connection=self.get_object(), actor=request.user)
        return self._present(connection)

    @extend_schema(
        summary="Where this connection is used",
        description="Workspace role bindings and system defaults that use the connection.",
        responses={200: DependentsSerializer, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["get"])
    def dependents(self, request, pk=None):
        rows = connection_dependents(connection=self.get_object())
        return Response({"count": len(rows), "bindings": rows})

    @extend_schema(
        summary="Move every binding to another connection",
        description="Workspace bindings and system defaults move in one transaction.",
        request=MoveBindingsInputSerializer,
        responses={200: MoveBindingsResultSerializer, 400: ERROR, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="move-bindings", url_name="move-bindings")
    def move_bindings(self, request, pk=None):
        source = self.get_object()
        data = self._input(MoveBindingsInputSerializer)
        target = Connection.objects.filter(pk=data["to"]).first()
        if target is None:
            raise ValidationFailed("The target connection does not exist.",
                                   fields={"to": ["No such connection."]})
        result = connection_move_bindings(source=source, target=target, actor=request.user)
        return Response(MoveBindingsResultSerializer(result).data)
