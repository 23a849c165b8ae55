"""Workspaces: teams' bindings of connections to roles, their members, API keys and usage."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone


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

    `provider` (instead of a connection): that provider's default connection (the one marked
    by set-default), looked up at resolution. `fallbacks` is an ordered list of
    {"connection": uuid, "model": str|None} tried on retryable failures. `default_params`:
    request fields added to every chat call (over the connection's, under the request's).
    """

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="bindings")
    role = models.CharField(max_length=16, choices=Role.choices)
    connection = models.ForeignKey(
        "connections.Connection", null=True, blank=True, on_delete=models.PROTECT,
        related_name="bindings",
    )
    provider = models.CharField(max_length=50, blank=True, default="")
    model = models.CharField(max_length=200, null=True, blank=True)
    fallbacks = models.JSONField(default=list, blank=True)
    default_params = models.JSONField(default=dict, blank=True)
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


class UserDefault(models.Model):
    """A user's own default connection and model for a role: what their personal API keys call
    (before the system default). The connection is shared or one of the user's personal ones."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="llm_defaults")
    role = models.CharField(max_length=16, choices=Role.choices)
    connection = models.ForeignKey("connections.Connection", on_delete=models.CASCADE,
                                   related_name="user_defaults")
    model = models.CharField(max_length=200, null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user", "role"]
        constraints = [
            models.UniqueConstraint(fields=["user", "role"], name="workspaces_one_user_default"),
        ]

    def __str__(self) -> str:
        return f"{self.user} / {self.role}"


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
    """An API key apps use to call models through a workspace (`lck_...`), or a user's personal
    key (`user` set, no workspace: calls resolve the user's defaults, then the system's).

    Only a SHA-256 hash of the key is stored (keys are long random strings, so a fast hash is
    enough); `prefix` (the first characters) lets people tell keys apart.
    """

    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="api_keys")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.CASCADE, related_name="personal_api_keys")
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
        constraints = [
            models.CheckConstraint(
                condition=(Q(workspace__isnull=False, user__isnull=True)
                           | Q(workspace__isnull=True, user__isnull=False)),
                name="workspaces_api_key_workspace_or_user"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.workspace or self.user})"


class UsageRecord(models.Model):
    """One model call made through a workspace (or a personal key), for usage and cost reports
    and budgets. The workspace's and connection's names are copied in, so that a report still
    names them after they were deleted (the foreign keys then become NULL)."""

    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="usage")
    workspace_name = models.CharField(max_length=100, blank=True, default="")
    connection = models.ForeignKey("connections.Connection", null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="usage")
    connection_name = models.CharField(max_length=100, blank=True, default="")
    api_key = models.ForeignKey(WorkspaceAPIKey, null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="usage")
    # Who called: a personal key's owner, or the user who created the workspace key.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="+")
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
    # 1 for the binding's own connection, 2.. for the fallbacks tried after it: a request that
    # fell back leaves one row per connection it reached.
    attempt = models.PositiveSmallIntegerField(default=1)
    # Where the token counts come from: the provider's answer, or llmconn's estimate (litellm's
    # token counter) when a provider said nothing, e.g. a stream without usage.
    usage_source = models.CharField(max_length=16, default="provider",
                                    choices=[("provider", "provider"), ("estimated", "estimated")])
    # When the call was made (not when the row was written: a row kept in the spool while the
    # database was down is written later with its call's time, in its period).
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # The call's x-request-id (llmconn.tracing). With `attempt` it identifies the row, so a
    # row written again from the spool (workspaces/usage_spool.py) is counted once.
    request_id = models.CharField(max_length=160, null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workspace", "created_at"]),
            models.Index(fields=["connection", "created_at"]),
        ]
        constraints = [
            models.UniqueConstraint(fields=["request_id", "attempt"],
                                    condition=Q(request_id__isnull=False),
                                    name="usage_request_id_attempt_unique"),
        ]


class UsageReport(UsageRecord):
    """The usage report page of the admin (no table of its own: a view of UsageRecord)."""

    class Meta:
        proxy = True
        verbose_name = "usage report"
        verbose_name_plural = "usage reports"


class BudgetScope(models.TextChoices):
    WORKSPACE = "workspace", "Workspace"
    CONNECTION = "connection", "Connection"


class BudgetPeriod(models.TextChoices):
    DAY = "day", "Day"
    MONTH = "month", "Month"


class BudgetMetric(models.TextChoices):
    COST = "cost", "Cost"
    TOKENS = "tokens", "Tokens (input + output)"


class Budget(models.Model):
    """A daily or monthly cap on the cost or tokens of a workspace's or a connection's calls.

    Periods are UTC calendar days or months. `warn_threshold` (a fraction of the limit) writes
    one audit event per period when crossed; at the limit the gateway refuses calls with 429.
    `warned_period` / `exceeded_period` hold the start of the period whose event was written,
    so that the event is written once whichever process sees the crossing first.
    """

    name = models.CharField(max_length=100, blank=True, default="")
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="budgets")
    connection = models.ForeignKey("connections.Connection", null=True, blank=True,
                                   on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices,
                              default=BudgetPeriod.MONTH)
    metric = models.CharField(max_length=8, choices=BudgetMetric.choices,
                              default=BudgetMetric.COST)
    limit = models.DecimalField(max_digits=18, decimal_places=6,
                                validators=[MinValueValidator(Decimal("0.000001"))])
    warn_threshold = models.DecimalField(
        max_digits=4, decimal_places=3, null=True, blank=True, default=Decimal("0.8"),
        validators=[MinValueValidator(Decimal("0.001")), MaxValueValidator(Decimal("1"))],
        help_text="Fraction of the limit (0.8 = 80 %) that writes an audit event; empty: none.")
    is_active = models.BooleanField(default=True)
    warned_period = models.DateTimeField(null=True, blank=True, editable=False)
    exceeded_period = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(scope="workspace", workspace__isnull=False, connection__isnull=True)
                           | Q(scope="connection", connection__isnull=False,
                               workspace__isnull=True)),
                name="workspaces_budget_scope_target"),
            models.UniqueConstraint(fields=["workspace", "period", "metric"],
                                    condition=Q(workspace__isnull=False),
                                    name="workspaces_one_budget_per_workspace_period_metric"),
            models.UniqueConstraint(fields=["connection", "period", "metric"],
                                    condition=Q(connection__isnull=False),
                                    name="workspaces_one_budget_per_connection_period_metric"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def target_name(self) -> str:
        if self.scope == BudgetScope.WORKSPACE:
            return f"workspace {self.workspace.slug!r}" if self.workspace_id else "workspace"
        return f"connection {self.connection.name!r}" if self.connection_id else "connection"

    @property
    def label(self) -> str:
        """How messages name the budget: its name, or what it limits."""
        what = f"{'daily' if self.period == BudgetPeriod.DAY else 'monthly'} {self.metric}"
        return f"{self.name!r} ({what} of {self.target_name})" if self.name else \
            f"{what} budget of {self.target_name}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.scope == BudgetScope.WORKSPACE and (not self.workspace_id or self.connection_id):
            raise ValidationError({"workspace": "A workspace budget names a workspace (and no "
                                                "connection)."})
        if self.scope == BudgetScope.CONNECTION and (not self.connection_id or self.workspace_id):
            raise ValidationError({"connection": "A connection budget names a connection (and "
                                                 "no workspace)."})
        if self.metric == BudgetMetric.TOKENS and self.limit is not None \
                and self.limit != self.limit.to_integral_value():
            raise ValidationError({"limit": "A token limit is a whole number."})
