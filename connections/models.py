"""Connections: named, reusable credential sets for one LLM provider account."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from providers.base import find_provider
from providers.validation import config_with_defaults, validate_connection_settings

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
    name = models.CharField(max_length=100, unique=True)
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
    is_default = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.UNTESTED
    )
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_error_class = models.CharField(max_length=32, blank=True, default="")
    revision = models.PositiveBigIntegerField(default=1, editable=False)
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

    def clean(self) -> None:
        secrets = None if self.secrets is UNREADABLE else (self.secrets or {})
        validate_connection_settings(
            provider=self.provider,
            auth_method=self.auth_method,
            base_url=self.base_url,
            config=self.config,
            secrets=secrets,
        )
