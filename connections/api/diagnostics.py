"""The API of connection tests and model discovery (views and their serializers).

Starting a test or a discovery answers 202 with the job (`status: "pending"`); a Celery worker
runs it; clients poll `GET /api/v1/connection-tests/{id}/`. Each view makes one service call
(connections.diagnostics).
"""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from connections import diagnostics
from connections.models import Connection, ConnectionTest, DiscoveredModel
from llmconn.throttling import ConnectionTestThrottle

from .permissions import (
    IsAuthenticatedForConnections,
    connection_for_owner_or_staff,
    is_staff,
    personal_enabled,
    reads_shared,
)


# --- serializers -------------------------------------------------------------------------------

class ConnectionTestSerializer(serializers.ModelSerializer):
    """A test or discovery job as clients see it (never its secrets or config)."""

    error_class = serializers.SerializerMethodField()
    endpoint = serializers.SerializerMethodField(
        help_text="API the test called: chat or embeddings (null until it runs; discovery).")
    connection = serializers.UUIDField(source="connection_id", read_only=True, allow_null=True)
    models = serializers.ListField(
        source="model_ids", child=serializers.CharField(), read_only=True, allow_null=True,
        help_text="A finished discovery's model ids (null for tests and unfinished jobs).")

    class Meta:
        model = ConnectionTest
        fields = ["id", "kind", "connection", "status", "error_class", "message", "latency_ms",
                  "model", "endpoint", "models_found", "models", "timeout_seconds", "provider",
                  "base_url", "created_at", "started_at", "finished_at"]
        read_only_fields = fields

    def get_error_class(self, obj) -> str | None:
        return obj.error_class or None

    def get_endpoint(self, obj) -> str | None:
        return obj.endpoint or None


class ConnectionTestStartSerializer(serializers.Serializer):
    """Optional body of POST /connections/{id}/test/."""

    model = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                  help_text="Model to call; default: the connection's default.")
    endpoint = serializers.ChoiceField(
        choices=["chat", "embeddings"], required=False,
        help_text="API to call; default: embeddings for an embedding model or the model the "
                  "connection serves to a workspace's embedding role, else chat.")


class UnsavedTestSerializer(serializers.Serializer):
    """A connection body to test (or discover models with) without saving it. Unknown keys
    (name, is_active) are ignored.

    With `connection`, settings not sent are that connection's, and its stored secrets fill the
    credential fields not sent (same provider and endpoint host only)."""

    connection = serializers.PrimaryKeyRelatedField(queryset=Connection.objects.all(),
                                                    required=False, allow_null=True)
    kind = serializers.ChoiceField(
        choices=["test", "discover"], default="test",
        help_text="test (default): one call; discover: list the models (the result's `models`).")
    timeout_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=600,
        help_text="Seconds the provider may take; default: the named connection's, else 20.")
    provider = serializers.CharField(required=False, max_length=50)
    auth_method = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                        max_length=50)
    base_url = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                     max_length=2048)
    default_model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    model = serializers.CharField(required=False, allow_blank=True, max_length=200,
                                  help_text="Model to call; default: default_model.")
    endpoint = serializers.ChoiceField(choices=["chat", "embeddings"], required=False,
                                       help_text="API to call (as for a saved connection).")
    config = serializers.DictField(required=False, allow_null=True)
    credentials = serializers.DictField(
        child=serializers.CharField(allow_null=True, allow_blank=True, max_length=8192,
                                    trim_whitespace=False),
        required=False, allow_null=True, write_only=True)


class DiscoveredModelSerializer(serializers.ModelSerializer):
    """One model a connection offers."""

    id = serializers.CharField(source="model_id")
    source = serializers.SerializerMethodField()

    class Meta:
        model = DiscoveredModel
        fields = ["id", "discovered_at", "source"]

    def get_source(self, obj) -> str:
        return (obj.metadata or {}).get("source", "")


class StaffOrManagerReading(BasePermission):
    """Staff; or, for reads, users who may read shared connections (workspace managers, and
    everyone when personal connections are on) or own the connection (checked by the view)."""

    message = "Only staff and workspace managers may read a connection's models."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return user.is_staff or (request.method in SAFE_METHODS
                                 and (reads_shared(request) or personal_enabled()))


def _may_use_personal(request) -> None:
    """Non-staff act only on their own personal connections (403 when the feature is off)."""
    if not is_staff(request) and not personal_enabled():
        raise PermissionDenied("Only staff test connections.")


# --- views -------------------------------------------------------------------------------------

def _accepted(test: ConnectionTest) -> Response:
    return Response(ConnectionTestSerializer(test).data, status=status.HTTP_202_ACCEPTED)


class ConnectionTestStartView(APIView):
    """POST /api/v1/connections/{id}/test/: test a saved connection."""

    permission_classes = [IsAuthenticatedForConnections]
    throttle_classes = [ConnectionTestThrottle]  # POSTs per user (LLMCONN_THROTTLE_TESTS)

    @extend_schema(summary="Test a saved connection", request=ConnectionTestStartSerializer,
                   responses={202: ConnectionTestSerializer})
    def post(self, request, pk):
        connection = connection_for_owner_or_staff(request, pk)
        body = ConnectionTestStartSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        test = diagnostics.connection_test_request(
            connection=connection, model=body.validated_data.get("model", ""),
            endpoint=body.validated_data.get("endpoint", ""), actor=request.user)
        return _accepted(test)


class ConnectionTestListCreateView(generics.ListAPIView):
    """GET/POST /api/v1/connection-tests/: list jobs; test unsaved settings."""

    permission_classes = [IsAuthenticatedForConnections]
    throttle_classes = [ConnectionTestThrottle]  # POSTs per user (LLMCONN_THROTTLE_TESTS)
    serializer_class = ConnectionTestSerializer
    filter_backends: list = []

    def get_queryset(self):
        _may_use_personal(self.request)
        connection_id = self.request.query_params.get("connection")
        if connection_id:
            serializers.UUIDField().run_validation(connection_id)
        tests = diagnostics.connection_test_list(connection_id=connection_id)
        if not is_staff(self.request):  # their own connections' tests and their own unsaved
            user = self.request.user
            tests = tests.filter(Q(connection__owner=user)
                                 | Q(connection__isnull=True, requested_by=user))
        return tests

    @extend_schema(summary="List connection tests and discovery jobs", parameters=[
        OpenApiParameter("connection", str, description="Only this connection's (UUID).")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Test unsaved connection settings", request=UnsavedTestSerializer,
                   responses={202: ConnectionTestSerializer})
    def post(self, request):
        _may_use_personal(request)
        body = UnsavedTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if data.get("connection") is not None:  # its stored secrets: staff or its owner
            connection_for_owner_or_staff(request, data["connection"].pk)
        model = data.pop("model", "") or data.pop("default_model", "")
        data.pop("default_model", None)
        test = diagnostics.connection_test_request_unsaved(
            model=model, actor=request.user, connection=data.pop("connection", None), **data)
        return _accepted(test)


class ConnectionTestDetailView(APIView):
    """GET /api/v1/connection-tests/{id}/: poll a job."""

    permission_classes = [IsAuthenticatedForConnections]

    @extend_schema(summary="Read a connection test or discovery job",
                   responses={200: ConnectionTestSerializer})
    def get(self, request, pk):
        _may_use_personal(request)
        test = diagnostics.connection_test_get(test_id=pk)
        if not is_staff(request):
            owner = test.connection.owner_id if test.connection_id else None
            mine = owner == request.user.pk if test.connection_id else \
                test.requested_by_id == request.user.pk
            if not mine:
                raise NotFound("No such connection test.")
        return Response(ConnectionTestSerializer(test).data)


class DiscoverModelsView(APIView):
    """POST /api/v1/connections/{id}/discover-models/: list the models a connection offers."""

    permission_classes = [IsAuthenticatedForConnections]
    throttle_classes = [ConnectionTestThrottle]  # POSTs per user (LLMCONN_THROTTLE_TESTS)

    @extend_schema(summary="Discover a connection's models", request=None,
                   responses={202: ConnectionTestSerializer})
    def post(self, request, pk):
        connection = connection_for_owner_or_staff(request, pk)
        return _accepted(diagnostics.connection_discover_models_request(
            connection=connection, actor=request.user))


class ConnectionModelsView(generics.ListAPIView):
    """GET /api/v1/connections/{id}/models/: the models the last discovery found.

    Staff, and workspace managers for active connections (they pick models when binding)."""

    serializer_class = DiscoveredModelSerializer
    permission_classes = [StaffOrManagerReading]
    filter_backends: list = []

    def get_queryset(self):
        if is_staff(self.request):
            qs = Connection.objects.all()
        else:
            visible = Q(pk__in=[])
            if personal_enabled():
                visible |= Q(owner_id=self.request.user.pk)
            if reads_shared(self.request):
                visible |= Q(owner__isnull=True, is_active=True)
            qs = Connection.objects.filter(visible)
        connection = get_object_or_404(qs, pk=self.kwargs["pk"])
        return diagnostics.connection_models(connection=connection)

    @extend_schema(summary="List a connection's discovered models",
                   responses={200: DiscoveredModelSerializer(many=True),
                              404: OpenApiResponse(description="No such connection.")})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
