"""Shapes of the connections API. Serializers check types and shape; services decide.

Output and input differ: the output carries credential hints and computed fields, the input
carries `credentials` (write-only). No serializer ever holds a secret value on the way out.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connections.models import Connection
from providers.headers import EXTRA_HEADERS

_field = Connection._meta.get_field


class StrictStringField(serializers.CharField):
    """A CharField that accepts only JSON strings (DRF's CharField turns 123 into "123")."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class LastTestSerializer(serializers.Serializer):
    """The newest connection test (kind "test") of a connection, in brief."""

    id = serializers.UUIDField()
    status = serializers.CharField()
    error_class = serializers.CharField()
    latency_ms = serializers.IntegerField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class CredentialStateSerializer(serializers.Serializer):
    """What the API says about one stored secret: that it is set, and its last 4 at most."""

    set = serializers.BooleanField()
    hint = serializers.CharField(help_text='"…WXYZ" (last four characters) or "" for short secrets.')
    readable = serializers.BooleanField(
        required=False, help_text="Present (false) when no configured key decrypts the secret.")


class ConnectionPublicSerializer(serializers.ModelSerializer):
    """A connection as workspace managers see it: no config, no credential hints."""

    last_test = serializers.SerializerMethodField()
    models_count = serializers.IntegerField(read_only=True, default=0)
    used_by_count = serializers.IntegerField(read_only=True, default=0)
    owner = serializers.IntegerField(source="owner_id", read_only=True, allow_null=True,
                                     help_text="Null: shared. A user id: that user's personal "
                                               "connection.")

    class Meta:
        model = Connection
        fields = [
            "id", "name", "owner", "provider", "auth_method", "base_url", "default_model",
            "is_default", "is_active", "status", "last_tested_at", "last_used_at", "last_test",
            "models_count", "used_by_count", "created_at", "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(LastTestSerializer(allow_null=True))
    def get_last_test(self, obj: Connection):
        tests = getattr(obj, "latest_tests", None)
        if tests is None:  # not fetched through connection_list_detailed()
            tests = list(obj.tests.filter(kind="test").order_by("-created_at", "-id")[:1])
        return LastTestSerializer(tests[0]).data if tests else None


@extend_schema_field(serializers.DictField(child=CredentialStateSerializer()))
class CredentialSummaryField(serializers.Field):
    """`{field: {"set": true, "hint": "…WXYZ"}}` for each stored secret; never a value."""

    def __init__(self, **kwargs):
        kwargs["source"] = "*"
        super().__init__(**kwargs)

    def to_representation(self, value: Connection) -> dict:
        return value.credential_summary()


class ConnectionSerializer(ConnectionPublicSerializer):
    """A connection as staff see a shared one and an owner their personal one: config and
    credential hints, never a secret value. Rows the caller may not see in full (another
    user's personal connection seen by staff; a shared one seen by others) are rendered as
    ConnectionPublicSerializer renders them, so the fields below are documented as optional.

    Output only (the input is ConnectionInputSerializer): the optional fields are declared
    writable so that the schema does not list them as always present.
    """

    config = serializers.JSONField(required=False)
    credentials = CredentialSummaryField(
        required=False, help_text='{field: {"set": true, "hint": "…WXYZ"}} for each stored '
                                  'secret.')
    credentials_readable = serializers.BooleanField(
        required=False,
        help_text="False when no configured Fernet key decrypts the stored secrets: send them again.")
    input_cost_per_million_tokens = serializers.DecimalField(
        max_digits=14, decimal_places=6, required=False, allow_null=True)
    output_cost_per_million_tokens = serializers.DecimalField(
        max_digits=14, decimal_places=6, required=False, allow_null=True)
    timeout_seconds = serializers.IntegerField(required=False, allow_null=True)
    default_params = serializers.JSONField(required=False)

    class Meta(ConnectionPublicSerializer.Meta):
        fields = ConnectionPublicSerializer.Meta.fields[:6] + [
            "config", "credentials", "credentials_readable"] + ConnectionPublicSerializer.Meta.fields[6:] + [
            "input_cost_per_million_tokens", "output_cost_per_million_tokens", "timeout_seconds",
            "default_params"]
        read_only_fields = ConnectionPublicSerializer.Meta.fields

    def to_representation(self, instance):
        from .permissions import sees_in_full

        request = self.context.get("request")
        if request is None or not sees_in_full(request.user, instance):
            return ConnectionPublicSerializer(instance, context=self.context).data
        return super().to_representation(instance)


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses unknown (or read-only) top-level fields by name."""

    read_only_names: frozenset[str] = frozenset()

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in self.fields)
            if unknown:
                errors = {}
                for name in unknown:
                    errors[name] = ["Read-only field; it cannot be set here."
                                    if name in self.read_only_names else "Unknown field."]
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StringDictField(serializers.DictField):
    """An object of string (or null) values whose keys are field names of sane length."""

    max_key_length = 100
    default_error_messages = {
        "key_too_long": f"Field names are at most {max_key_length} characters.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("child", StrictStringField(allow_null=True, allow_blank=True,
                                                     trim_whitespace=False))
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict) and any(len(str(k)) > self.max_key_length for k in data):
            self.fail("key_too_long")
        return super().to_internal_value(data)


def _credentials_field() -> serializers.DictField:
    return StringDictField(
        write_only=True, required=False,
        help_text=("Secret fields of the auth method, e.g. {\"api_key\": \"sk-...\"}. Left out: "
                   "stored values are kept. A field set to null is removed. Never returned."),
    )


class ConfigField(StringDictField):
    """`config`: string (or null) values, except `extra_headers`, an object of header values
    (providers/headers.py checks names and values; the services refuse bad ones by name)."""

    def to_internal_value(self, data):
        headers = data.get(EXTRA_HEADERS) if isinstance(data, dict) else None
        if isinstance(headers, dict):
            rest = {k: v for k, v in data.items() if k != EXTRA_HEADERS}
            value = super().to_internal_value(rest)
            if any(not isinstance(v, str) for v in headers.values()):
                raise serializers.ValidationError(
                    {EXTRA_HEADERS: ["Header values must be strings."]})
            value[EXTRA_HEADERS] = {str(k): v for k, v in headers.items()}
            return value
        return super().to_internal_value(data)


def _config_field() -> serializers.DictField:
    return ConfigField(
        required=False,
        help_text="The provider's non-secret fields, e.g. {\"api_version\": \"2024-10-21\"}; "
                  "`extra_headers`: {name: value} of non-secret headers sent on every call.",
    )


class ConnectionInputSerializer(StrictInputSerializer):
    """The body of POST/PUT/PATCH /api/v1/connections/[id/]. The services validate the values."""

    read_only_names = frozenset(ConnectionSerializer.Meta.fields)

    name = StrictStringField(max_length=_field("name").max_length)
    provider = StrictStringField(max_length=_field("provider").max_length)
    auth_method = StrictStringField(
        max_length=_field("auth_method").max_length, required=False, allow_null=True,
        allow_blank=True, help_text="May be left out when the provider has one auth method.")
    base_url = StrictStringField(
        max_length=_field("base_url").max_length, required=False, allow_null=True,
        allow_blank=True, help_text="Null: the provider's default endpoint.")
    default_model = StrictStringField(max_length=_field("default_model").max_length,
                                      required=False, allow_blank=True, allow_null=True)
    config = _config_field()
    credentials = _credentials_field()
    is_active = serializers.BooleanField(required=False, default=True)
    input_cost_per_million_tokens = serializers.DecimalField(
        max_digits=14, decimal_places=6, min_value=0, required=False, allow_null=True,
        help_text="Price per million input tokens, overriding litellm's price table (private "
                  "models). Null: litellm's price.")
    output_cost_per_million_tokens = serializers.DecimalField(
        max_digits=14, decimal_places=6, min_value=0, required=False, allow_null=True,
        help_text="Price per million output tokens, overriding litellm's price table.")
    timeout_seconds = serializers.IntegerField(
        min_value=1, max_value=600, required=False, allow_null=True,
        help_text="Gateway call timeout (then the binding's next fallback is tried). Null: "
                  "LLMCONN_PROVIDER_TIMEOUT.")
    default_params = serializers.DictField(
        required=False, help_text="Request fields added to every chat call (temperature, "
                                  "top_p, max_tokens, stop, seed, ...); the binding's and the "
                                  "request's override them.")


class FromPresetInputSerializer(StrictInputSerializer):
    """The body of POST /api/v1/connections/from-preset/: a preset name, a name, secrets and
    optional overrides of the preset's settings."""

    preset = StrictStringField(max_length=100, help_text="A name from GET /api/v1/presets/.")
    name = StrictStringField(max_length=_field("name").max_length)
    credentials = _credentials_field()
    auth_method = StrictStringField(max_length=_field("auth_method").max_length, required=False,
                                    allow_null=True, allow_blank=True)
    base_url = StrictStringField(max_length=_field("base_url").max_length, required=False,
                                 allow_null=True, allow_blank=True)
    default_model = StrictStringField(max_length=_field("default_model").max_length,
                                      required=False, allow_blank=True, allow_null=True)
    config = _config_field()
    is_active = serializers.BooleanField(required=False, default=True)


class MoveBindingsInputSerializer(StrictInputSerializer):
    """The body of POST /api/v1/connections/{id}/move-bindings/."""

    to = serializers.UUIDField(help_text="The connection that takes over every binding.")


class MoveBindingsResultSerializer(serializers.Serializer):
    moved_bindings = serializers.IntegerField()
    moved_system_defaults = serializers.IntegerField()
    moved_fallbacks = serializers.IntegerField(
        help_text="Bindings whose fallbacks named the connection (now the target).")
    workspaces = serializers.ListField(child=serializers.CharField(),
                                       help_text="Slugs of the workspaces whose bindings moved.")
    to = serializers.UUIDField()


class DependentSerializer(serializers.Serializer):
    """One place that uses a connection: a workspace role binding or a system default."""

    workspace = serializers.CharField(allow_null=True, help_text="Slug; null for a system default.")
    workspace_name = serializers.CharField(allow_null=True)
    role = serializers.CharField()
    system_default = serializers.BooleanField()
    fallback = serializers.BooleanField(
        help_text="True when the connection is one of the binding's fallbacks.")


class DependentsSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    bindings = DependentSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API."""

    error = ErrorDetailSerializer()
