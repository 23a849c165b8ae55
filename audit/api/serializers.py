"""Output shape of audit events."""

from rest_framework import serializers

from ..models import AuditEvent


class AuditEventOutputSerializer(serializers.ModelSerializer):
    """An audit event as the API shows it (fingerprints only, never a secret)."""

    actor = serializers.CharField(source="actor_name")
    target = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "seq", "created_at", "actor", "actor_id", "auth_kind", "ip",
                  "user_agent", "action", "target", "outcome", "changed_fields",
                  "secret_fingerprints", "extra", "prev_hash", "hash"]
        read_only_fields = fields

    def get_target(self, obj) -> dict:
        return {"type": obj.target_type, "id": obj.target_id, "name": obj.target_name}
