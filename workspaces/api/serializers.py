"""Input and output shapes of the workspaces API. No secret and no connection config here."""

from __future__ import annotations

from rest_framework import serializers

from ..models import Membership, Workspace, WorkspaceAPIKey
from ..selectors import bindings_of


class WorkspaceInputSerializer(serializers.Serializer):
    """POST/PATCH body: name, slug, bindings (validated in depth by the services)."""

    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=100, required=False)
    bindings = serializers.JSONField(required=False)

    def validate_bindings(self, value):
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError(
                'Must be an object: {"chat": {"connection": id, "model": str|null}, ...}.')
        return value


class WorkspaceOutputSerializer(serializers.ModelSerializer):
    """A workspace with its three role bindings."""

    bindings = serializers.SerializerMethodField()

    class Meta:
        model = Workspace
        fields = ["name", "slug", "bindings", "revision", "created_at", "updated_at"]

    def get_bindings(self, obj) -> dict:
        return bindings_of(workspace=obj)


class APIKeyInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class APIKeyOutputSerializer(serializers.ModelSerializer):
    """An API key without its secret (only the prefix that tells keys apart)."""

    created_by = serializers.CharField(source="created_by.username", default=None,
                                       read_only=True)
    is_active = serializers.SerializerMethodField()

    class Meta:
        model = WorkspaceAPIKey
        fields = ["id", "name", "prefix", "is_active", "created_by", "created_at",
                  "last_used_at", "revoked_at"]

    def get_is_active(self, obj) -> bool:
        return obj.revoked_at is None


class MembershipInputSerializer(serializers.Serializer):
    user = serializers.CharField(help_text="Username or user id.")
    role = serializers.CharField(default="member", help_text="manager or member.")


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.CharField(help_text="manager or member.")


class MembershipOutputSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    user_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user", "user_id", "role", "created_at"]


class SystemDefaultOutputSerializer(serializers.Serializer):
    """The system default of one role (connection null: none set)."""

    role = serializers.CharField()
    connection = serializers.UUIDField(allow_null=True)
    connection_name = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField(), required=False)


class SystemDefaultInputSerializer(serializers.Serializer):
    connection = serializers.UUIDField()
    model = serializers.CharField(max_length=200, required=False, allow_null=True,
                                  allow_blank=True, default=None)
