"""Output shapes of the provider catalog (read-only: the catalog is code, not data)."""

from __future__ import annotations

from rest_framework import serializers


class FieldSerializer(serializers.Serializer):
    """One setting of a provider or auth method; secret ones go to `credentials`."""

    name = serializers.CharField()
    label = serializers.CharField()
    required = serializers.BooleanField()
    secret = serializers.BooleanField()
    default = serializers.CharField(allow_null=True)
    help_text = serializers.CharField()
    kind = serializers.ChoiceField(choices=["text", "url"])
    destination = serializers.BooleanField(
        help_text="True when changing the value changes where secrets are sent: the stored "
                  "secrets must then be sent again (400 credentials_required).")


class AuthMethodSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    fields = FieldSerializer(many=True)


class ProviderSerializer(serializers.Serializer):
    """A provider type as `Provider.as_dict()` describes it."""

    name = serializers.CharField()
    label = serializers.CharField()
    litellm_prefix = serializers.CharField()
    auth_methods = AuthMethodSerializer(many=True)
    fields = FieldSerializer(many=True, help_text="Provider-level settings (config), any auth method.")
    default_base_url = serializers.CharField(allow_null=True)
    base_url_required = serializers.BooleanField()
    capabilities = serializers.ListField(child=serializers.ChoiceField(choices=["chat", "embeddings"]))
    wire = serializers.CharField()
    models = serializers.ListField(child=serializers.CharField())
    docs_url = serializers.CharField()


class PresetSerializer(serializers.Serializer):
    """A named starting point for a connection (`POST /api/v1/connections/from-preset/`)."""

    name = serializers.CharField()
    label = serializers.CharField()
    description = serializers.CharField()
    provider = serializers.CharField()
    auth_method = serializers.CharField()
    base_url = serializers.CharField(allow_null=True)
    default_model = serializers.CharField()
    config = serializers.DictField(child=serializers.CharField())
