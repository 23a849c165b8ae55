"""Workspaces: teams' bindings of connections to roles, their members, API keys and usage."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    """What a workspace uses a model for."""

    CHAT = "chat", "Chat"
    AGENT = "agent", "Agent"
    EMBEDDING = "embedding", "Embedding"


class Workspace(models.Model):
    """A team's set of role bindings; apps call models through it with its API keys.

    `revision` grows on every change of the workspace or its bindings, so processes that cache
    a resolution can tell it is stale.
    """

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    revision = models.PositiveBigIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkspaceBinding(models.Model):
    """The connection (None: the system default for the role) and model a workspace role uses.

    `fallbacks` is an ordered list of {"connection": uuid, "model": str|None} tried on
    retryable failures.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="bindings")
    role = models.CharField(max_length=16, choices=Role.choices)
    connection = models.ForeignKey(
        "connections.Connection", null=True, blank=True, on_delete=models.PROTECT,
        related_name="bindings",
    )
    model = models.CharField(max_length=200, null=True, blank=True)
    fallbacks = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace", "role"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "role"], name="workspaces_one_binding_per_role"),
        ]

    def __str__(self) -> str:
        return f"{self.workspace} / {self.role}"


class SystemDefault(models.Model):
    """The connection and model used by every workspace that binds a role to no connection."""

    role = models.CharField(max_length=16, choices=Role.choices, unique=True)
    connection = models.ForeignKey(
        "connections.Connection", on_delete=models.PROTECT, related_name="system_defaults"
    )
    model = models.CharField(max_length=200, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"default {self.role}"


class MemberRole(models.TextChoices):
    MANAGER = "manager", "Manager"
    MEMBER = "member", "Member"


class Membership(models.Model):
    """A user's role in a workspace: managers change bindings and keys, members use it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="workspace_memberships")
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="workspaces_one_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class WorkspaceAPIKey(models.Model):
    """An API key apps use to call models through a workspace (`lck_...`).

    Only a SHA-256 hash of the key is stored (keys are long random strings, so a fast hash is
    enough); `prefix` (the first characters) lets people tell keys apart.
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.workspace})"


class UsageRecord(models.Model):
    """One model call made through a workspace, for usage and cost reports and budgets."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="usage")
    connection = models.ForeignKey("connections.Connection", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="usage")
    api_key = models.ForeignKey(WorkspaceAPIKey, null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="usage")
    role = models.CharField(max_length=16, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    endpoint = models.CharField(max_length=32, default="chat")
    stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(default=200)
    error_class = models.CharField(max_length=32, blank=True, default="")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "created_at"]),
            models.Index(fields=["connection", "created_at"]),
        ]
