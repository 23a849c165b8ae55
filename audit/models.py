"""Audit log: an append-only, hash-chained record of who changed what, when and from where."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit event."""


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    FAILED = "failed", "Failed"


class AuthKind(models.TextChoices):
    SESSION = "session", "Session (admin login)"
    TOKEN = "token", "API token"
    WORKSPACE_KEY = "workspace_key", "Workspace API key"
    COMMAND = "command", "Management command"
    SYSTEM = "system", "System (task)"
    ANONYMOUS = "anonymous", "Not authenticated"


class AuditEventQuerySet(models.QuerySet):
    """Reads only: bulk update and delete raise (the PostgreSQL trigger is the backstop)."""

    def update(self, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")

    update.queryset_only = True
    delete.queryset_only = True


class AuditEvent(models.Model):
    """One recorded action: actor, how they authenticated, origin, target, outcome, changes.

    Secrets appear only as keyed fingerprints (HMAC-SHA256 with AUDIT_HMAC_KEY). Each event
    stores the previous event's hash and its own hash over a canonical form of its fields, so
    `manage.py verify_audit` finds edited, deleted or reordered events. Write with
    `audit.services.audit_record`, never directly.
    """

    seq = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False, db_index=True)
    # No database constraint: deleting a user must not touch (UPDATE) audit rows.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+",
    )
    actor_name = models.CharField(max_length=150, blank=True, default="")
    auth_kind = models.CharField(max_length=16, choices=AuthKind.choices)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    target_name = models.CharField(max_length=200, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    changed_fields = models.JSONField(default=list, blank=True)
    secret_fingerprints = models.JSONField(default=dict, blank=True)
    extra = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_type}:{self.target_name or self.target_id} ({self.outcome})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only: they cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be deleted.")


class AuditChainHead(models.Model):
    """The last event's position and hash (one row), so that cutting events off the end of the
    chain is detected too. Updated in the same transaction as each append."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"audit chain head #{self.seq}"
