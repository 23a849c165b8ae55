"""Connections: named, reusable credential sets for one LLM provider account."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from providers.base import find_provider
from providers.validation import (
    config_with_defaults,
    connection_destination,
    validate_connection_settings,
)

from .fields import UNREADABLE, EncryptedSecretsField, UnreadableSecrets


class ConnectionStatus(models.TextChoices):
    UNTESTED = "untested", "Untested"
    OK = "ok", "OK"
    FAILED = "failed", "Failed"


class Connection(models.Model):
    """One provider account: provider, auth method, endpoint, default model and its secrets.

    Secrets live only in `secrets` (Fernet-encrypted JSON); `secret_hints` keeps the last
    four characters of long secrets so people can tell keys apart without seeing them.
    `revision` grows on every change so that processes caching a resolved connection can tell
    that it is stale.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    # Null: a shared connection (staff manage it). A user: that user's personal connection,
    # seen in full and used only by them (see README "People and defaults").
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="personal_connections",
    )
    provider = models.CharField(max_length=50, db_index=True)
    auth_method = models.CharField(max_length=50)
    base_url = models.CharField(
        max_length=2048, null=True, blank=True, help_text="Empty: the provider's default endpoint."
    )
    default_model = models.CharField(max_length=200, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    secrets = EncryptedSecretsField(key_id_field="secrets_key_id")
    secrets_key_id = models.CharField(max_length=16, blank=True, default="", db_index=True,
                                      editable=False)
    secret_hints = models.JSONField(default=dict, blank=True, editable=False)
    # Staged provider-key rotation: a new secret waits in `pending_secrets` until its test
    # passes; the replaced one stays in `previous_secrets` until it expires, for rollback.
    pending_secrets = EncryptedSecretsField(key_id_field="pending_secrets_key_id", null=True,
                                            default=None)
    pending_secrets_key_id = models.CharField(max_length=16, blank=True, default="",
                                              editable=False)
    previous_secrets = EncryptedSecretsField(key_id_field="previous_secrets_key_id", null=True,
                                             default=None)
    previous_secrets_key_id = models.CharField(max_length=16, blank=True, default="",
                                               editable=False)
    previous_secrets_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Where the previous secret was entered (Connection.destination at the rotation): a
    # rollback after the destination changed is refused, so the old key never follows it.
    previous_secrets_destination = models.JSONField(null=True, blank=True, editable=False)
    is_default = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    # Gateway calls: prices for models litellm's price table does not know (private models),
    # in currency units per million tokens; and how long a call may take before it counts as
    # a timeout (and a fallback is tried). Null: litellm's price / the global default.
    input_cost_per_million_tokens = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text="Overrides litellm's price table for this connection's calls.")
    output_cost_per_million_tokens = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)],
        help_text="Overrides litellm's price table for this connection's calls.")
    timeout_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(600)],
        help_text="Gateway call timeout; empty: LLMCONN_PROVIDER_TIMEOUT.")
    # Request fields added to every chat call (merged connection < binding < request).
    default_params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.UNTESTED
    )
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_error_class = models.CharField(max_length=32, blank=True, default="")
    revision = models.PositiveBigIntegerField(default=1, editable=False)
    # Written at most once a minute per process (workspaces.services.connection_touch).
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            # Names are unique among shared connections and among one user's personal ones
            # (a personal name never collides with, nor reveals, another user's).
            models.UniqueConstraint(
                fields=["name"], condition=Q(owner__isnull=True),
                name="connections_unique_shared_name",
                violation_error_message="A connection with this name already exists.",
            ),
            models.UniqueConstraint(
                fields=["owner", "name"], condition=Q(owner__isnull=False),
                name="connections_unique_personal_name",
                violation_error_message="You already have a connection with this name.",
            ),
            # Exactly one default per provider, held by the database even under races.
            models.UniqueConstraint(
                fields=["provider"], condition=Q(is_default=True),
                name="connections_one_default_per_provider",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def spec(self):
        """The catalog entry of this connection's provider (None if it left the catalog)."""
        return find_provider(self.provider)

    @property
    def credentials_readable(self) -> bool:
        return not isinstance(self.secrets, UnreadableSecrets)

    @property
    def effective_base_url(self) -> str | None:
        spec = self.spec
        return spec.effective_base_url(self.base_url) if spec else self.base_url

    @property
    def destination(self) -> dict:
        """Where this connection's secrets may travel (providers.base.Provider.destination):
        a stored secret is only ever sent to the destination it was entered for."""
        return connection_destination(provider=self.provider, auth_method=self.auth_method,
                                      base_url=self.base_url, config=self.config)

    @property
    def effective_config(self) -> dict:
        return config_with_defaults(self.provider, self.auth_method, self.config or {})

    def credential_summary(self) -> dict:
        """`{field: {"set": True, "hint": "…WXYZ"}}` for each stored secret; never a value."""
        if not self.credentials_readable:
            return {
                name: {"set": True, "hint": "", "readable": False}
                for name in (self.secret_hints or {})
            }
        return {
            name: {"set": True, "hint": f"…{hint}" if hint else ""}
            for name, hint in sorted((self.secret_hints or {}).items())
            if name in (self.secrets or {})
        }

    @property
    def is_personal(self) -> bool:
        return self.owner_id is not None

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from providers.default_params import clean_default_params

        try:
            self.default_params = clean_default_params(self.default_params)
        except ValueError as exc:
            raise ValidationError({"default_params": [str(exc)]}) from None
        if self.owner_id is not None and self.is_default:
            raise ValidationError({"is_default": [
                "A personal connection cannot be its provider's default."]})
        # The partial unique constraints hold under races; this names the field for people.
        same = Connection.objects.filter(name=self.name, owner_id=self.owner_id).exclude(
            pk=self.pk)
        if self.name and same.exists():
            raise ValidationError({"name": [
                "A connection with this name already exists." if self.owner_id is None
                else "You already have a connection with this name."]})
        spec = self.spec
        if spec is not None:  # Ollama's documented http://localhost:11434 means .../v1
            self.base_url = spec.normalize_base_url(self.base_url)
        secrets = None if self.secrets is UNREADABLE else (self.secrets or {})
        validate_connection_settings(
            provider=self.provider,
            auth_method=self.auth_method,
            base_url=self.base_url,
            config=self.config,
            secrets=secrets,
        )


class TestStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ErrorClass(models.TextChoices):
    """Why a test or call failed, as the contract names it."""

    AUTH = "auth", "Authentication failed"
    RATE_LIMITED = "rate_limited", "Rate limited"
    UNREACHABLE = "unreachable", "Unreachable"
    TIMEOUT = "timeout", "Timed out"
    MODEL_NOT_FOUND = "model_not_found", "Model not found"
    BAD_REQUEST = "bad_request", "Bad request"
    BLOCKED = "blocked", "Blocked by egress policy"
    PROVIDER_ERROR = "provider_error", "Provider error"


class JobKind(models.TextChoices):
    TEST = "test", "Connection test"
    DISCOVER = "discover", "Model discovery"


class ConnectionTest(models.Model):
    """One asynchronous check of a connection (a test call or a model discovery).

    A test of an unsaved configuration has no `connection` (or names one whose stored secrets
    fill the fields not sent); its settings are kept here, secrets encrypted, so the task
    receives only this row's id. `secrets` is emptied when the test finishes.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=JobKind.choices, default=JobKind.TEST)
    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.CASCADE, related_name="tests"
    )
    # The configuration under test (a copy for saved connections, the input for unsaved ones).
    provider = models.CharField(max_length=50)
    auth_method = models.CharField(max_length=50)
    base_url = models.CharField(max_length=2048, null=True, blank=True)
    config = models.JSONField(default=dict, blank=True)
    secrets = EncryptedSecretsField(key_id_field="secrets_key_id", null=True, default=None)
    secrets_key_id = models.CharField(max_length=16, blank=True, default="", editable=False)
    model = models.CharField(max_length=200, blank=True, default="")
    # Which API the test calls: "chat" or "embeddings" (asked for, or chosen from the model and
    # the connection's embedding bindings); empty until the test runs, and for discovery.
    endpoint = models.CharField(max_length=16, blank=True, default="",
                                choices=[("chat", "chat"), ("embeddings", "embeddings")])
    # Set for a test of a saved connection's own settings: the connection revision tested. Its
    # result updates the connection's status only if the connection has not changed since.
    connection_revision = models.PositiveBigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=TestStatus.choices,
                              default=TestStatus.PENDING, db_index=True)
    error_class = models.CharField(max_length=32, choices=ErrorClass.choices, blank=True,
                                   default="")
    message = models.TextField(blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    models_found = models.PositiveIntegerField(null=True, blank=True)
    # A finished discovery's model ids (also for unsaved settings, so a form can offer them).
    model_ids = models.JSONField(null=True, blank=True, default=None)
    # The provider call's time limit (the connection's timeout_seconds); null: TEST_TIMEOUT_S.
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    # HMAC of the unsaved settings tested (secrets included; never reversible), so that the
    # admin's add form can make this result the status of the connection saved from them.
    settings_digest = models.CharField(max_length=64, blank=True, default="", editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["connection", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.id} ({self.status})"


class DiscoveredModel(models.Model):
    """A model that a connection offers, as its last discovery found it."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="discovered_models"
    )
    model_id = models.CharField(max_length=300)
    discovered_at = models.DateTimeField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["model_id"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "model_id"],
                                    name="connections_discovered_model_unique"),
        ]

    def __str__(self) -> str:
        return self.model_id
