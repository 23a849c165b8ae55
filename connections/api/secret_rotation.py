"""API of staged provider-secret rotation: rotate-secret and rollback-secret (staff only)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.models import Connection

from .permissions import IsAuthenticatedForConnections, connection_for_owner_or_staff
from connections.secret_rotation import connection_rollback_secret, connection_rotate_secret
from llmconn.errors import ApplicationError, ValidationFailed
from llmconn.throttling import ConnectionTestThrottle


class RotateSecretInputSerializer(serializers.Serializer):
    """The new secret fields; fields left out keep their stored values."""

    credentials = serializers.DictField(child=serializers.CharField(allow_null=True,
                                                                    trim_whitespace=False))


class SecretTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error_class = serializers.CharField(allow_blank=True)
    message = serializers.CharField(allow_blank=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    model = serializers.CharField(allow_blank=True)


class RotationResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    rotated = serializers.BooleanField()
    revision = serializers.IntegerField()
    credentials = serializers.DictField()
    previous_expires_at = serializers.DateTimeField(allow_null=True)
    test = SecretTestSerializer()


class RollbackResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    rolled_back = serializers.BooleanField()
    revision = serializers.IntegerField()
    credentials = serializers.DictField()


class RotationTestFailed(ApplicationError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "rotation_test_failed"


ERROR = OpenApiResponse(description="The one error shape.")


class _StaffConnectionView(APIView):
    """Staff on shared connections; the owner on their personal one."""

    permission_classes = [IsAuthenticatedForConnections]
    audit_target_type = "connection"

    def connection(self, pk) -> Connection:
        return connection_for_owner_or_staff(self.request, pk)


class RotateSecretView(_StaffConnectionView):
    """POST /api/v1/connections/{id}/rotate-secret/: test a new secret, promote it if it works."""

    audit_action = "rotate_secret"
    # It calls the provider synchronously: counted with the tests (LLMCONN_THROTTLE_TESTS).
    throttle_classes = [ConnectionTestThrottle]

    @extend_schema(
        summary="Rotate the provider secret (staged)",
        description="The new secret is stored as pending and tested against the provider. "
                    "It replaces the current one only if the test passes; the replaced "
                    "secret can be brought back with rollback-secret for a limited time. "
                    "On a failed test (400 rotation_test_failed) the current secret stays.",
        request=RotateSecretInputSerializer,
        responses={200: RotationResultSerializer, 400: ERROR, 401: ERROR, 403: ERROR,
                   404: ERROR, 409: ERROR},
    )
    def post(self, request, pk):
        connection = self.connection(pk)
        data = RotateSecretInputSerializer(data=request.data)
        if not data.is_valid():
            raise ValidationFailed("credentials must be an object of secret fields.",
                                   fields=data.errors)
        outcome = connection_rotate_secret(connection=connection,
                                           credentials=data.validated_data["credentials"],
                                           actor=request.user)
        test = outcome.test.as_dict()
        if not outcome.promoted:
            raise RotationTestFailed(
                f"The new secret failed its test ({test['error_class'] or 'error'}): "
                f"{test['message'] or 'no details'}. The current secret stays in use.",
                extra={"test": test},
            )
        conn = outcome.connection
        return Response(RotationResultSerializer({
            "id": conn.pk, "rotated": True, "revision": conn.revision,
            "credentials": conn.credential_summary(),
            "previous_expires_at": outcome.previous_expires_at, "test": test,
        }).data)


class RollbackSecretView(_StaffConnectionView):
    """POST /api/v1/connections/{id}/rollback-secret/: bring back the replaced secret."""

    audit_action = "rollback_secret"

    @extend_schema(
        summary="Roll back the last secret rotation",
        description="Restores the secret replaced by the last rotation while its rollback "
                    "window lasts; 409 when there is none.",
        request=None,
        responses={200: RollbackResultSerializer, 401: ERROR, 403: ERROR, 404: ERROR,
                   409: ERROR},
    )
    def post(self, request, pk):
        conn = connection_rollback_secret(connection=self.connection(pk), actor=request.user)
        return Response(RollbackResultSerializer({
            "id": conn.pk, "rolled_back": True, "revision": conn.revision,
            "credentials": conn.credential_summary(),
        }).data)
