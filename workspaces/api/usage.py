"""Usage reports and budgets API: GET /api/v1/usage/, /api/v1/budgets/[{id}/].

Who may do what: staff read every usage row and manage every budget; a workspace's managers
read the usage and the budgets of their workspaces (not other workspaces', not connection
budgets) and change nothing; anyone else sees no rows (403 on /usage/, an empty budget list).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from connections.api.serializers import StrictInputSerializer
from llmconn.errors import NotFound, ValidationFailed

from .. import budgets as budget_counters
from ..models import Budget, BudgetMetric, BudgetPeriod, BudgetScope, MemberRole, Membership
from ..models import Workspace
from ..usage import GROUPS, parse_group_by, parse_moment, usage_report


def managed_workspace_ids(user) -> list[int] | None:
    """None for staff (everything); else the ids of the workspaces the user manages."""
    if user.is_staff:
        return None
    return list(Membership.objects.filter(user=user, role=MemberRole.MANAGER)
                .values_list("workspace_id", flat=True))


# --- usage ------------------------------------------------------------------------------------

class UsageRowSerializer(serializers.Serializer):
    """One group of the report (the group fields present depend on group_by)."""

    workspace = serializers.CharField(required=False, allow_null=True)
    workspace_name = serializers.CharField(required=False, allow_null=True)
    connection = serializers.UUIDField(required=False, allow_null=True)
    connection_name = serializers.CharField(required=False, allow_null=True)
    model = serializers.CharField(required=False)
    day = serializers.DateField(required=False)
    api_key = serializers.IntegerField(required=False, allow_null=True)
    api_key_name = serializers.CharField(required=False, allow_null=True)
    api_key_prefix = serializers.CharField(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_null=True, help_text="Username.")
    user_id = serializers.IntegerField(required=False, allow_null=True)
    calls = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=20, decimal_places=8, allow_null=True)
    estimated_calls = serializers.IntegerField(
        help_text="Calls whose tokens llmconn counted (usage_source \"estimated\": the provider "
                  "reported no usage); included in the token and cost totals.")
    estimated_input_tokens = serializers.IntegerField()
    estimated_output_tokens = serializers.IntegerField()
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p95_ms = serializers.FloatField(allow_null=True)


class UsageReportSerializer(serializers.Serializer):
    group_by = serializers.ListField(child=serializers.CharField())
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    rows = UsageRowSerializer(many=True)
    totals = UsageRowSerializer()
    latency_sampled = serializers.BooleanField()


class UsageView(APIView):
    """GET /api/v1/usage/: calls, errors, tokens, cost and latency p50/p95, grouped."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("group_by", str, description=f"One or more (comma-separated) of "
                             f"{', '.join(GROUPS)}; default workspace."),
            OpenApiParameter("workspace", str, description="Workspace slug."),
            OpenApiParameter("connection", OpenApiTypes.UUID),
            OpenApiParameter("since", str, description="Date (UTC day start) or ISO datetime; "
                             "default 30 days before until."),
            OpenApiParameter("until", str, description="Date (through that UTC day) or ISO "
                             "datetime (exclusive); default now."),
        ],
        responses=UsageReportSerializer,
    )
    def get(self, request):
        params = request.query_params
        allowed = managed_workspace_ids(request.user)
        if allowed is not None and not allowed:
            raise PermissionDenied("Only staff and workspace managers may read usage.")
        group_by = parse_group_by(params.get("group_by"))
        since = parse_moment(params.get("since"), name="since")
        until = parse_moment(params.get("until"), name="until", end=True)
        workspace_ids = allowed
        if params.get("workspace"):
            found = Workspace.objects.filter(slug=params["workspace"]).values_list(
                "pk", flat=True).first()
            if found is None or (allowed is not None and found not in allowed):
                raise NotFound(f"No workspace {params['workspace']!r}.")
            workspace_ids = [found]
        connection_id = None
        if params.get("connection"):
            try:
                connection_id = uuid.UUID(params["connection"])
            except ValueError:
                raise ValidationFailed("connection must be a connection id (UUID).",
                                       fields={"connection": ["Not a UUID."]}) from None
        return Response(usage_report(group_by=group_by, since=since, until=until,
                                     workspace_ids=workspace_ids, connection_id=connection_id))


# --- budgets ----------------------------------------------------------------------------------

class BudgetOutputSerializer(serializers.ModelSerializer):
    """A budget with what its target spent in the current period."""

    workspace = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    connection_name = serializers.CharField(source="connection.name", read_only=True,
                                            default=None, allow_null=True)
    label = serializers.CharField(read_only=True)
    limit = serializers.SerializerMethodField(help_text="Currency units (cost) or tokens.")
    used = serializers.SerializerMethodField(help_text="Spent this period (cost or tokens).")
    period_start = serializers.SerializerMethodField()
    resets_at = serializers.SerializerMethodField()
    exceeded = serializers.SerializerMethodField()

    class Meta:
        model = Budget
        fields = ["id", "name", "label", "scope", "workspace", "connection", "connection_name",
                  "period", "metric", "limit", "warn_threshold", "is_active", "used",
                  "period_start", "resets_at", "exceeded", "created_at", "updated_at"]
        read_only_fields = fields

    def _current(self, obj) -> dict:
        cache = self.context.setdefault("_budget_state", {})
        if obj.pk not in cache:
            state = budget_counters._state(obj)
            start, end = state.bounds()
            used = budget_counters.used(state)
            cache[obj.pk] = {**state.describe(used, start, end), "units": used,
                             "limit_units": state.limit_units}
        return cache[obj.pk]

    def get_limit(self, obj) -> str:
        return self._current(obj)["limit"]

    def get_used(self, obj) -> str:
        return self._current(obj)["used"]

    def get_period_start(self, obj) -> str:
        return self._current(obj)["period_start"]

    def get_resets_at(self, obj) -> str:
        return self._current(obj)["resets_at"]

    def get_exceeded(self, obj) -> bool:
        current = self._current(obj)
        return obj.is_active and current["units"] >= current["limit_units"]


class BudgetInputSerializer(StrictInputSerializer):
    """POST/PATCH body of a budget. scope, workspace and connection are set on creation."""

    read_only_names = frozenset(BudgetOutputSerializer.Meta.fields)

    scope = serializers.ChoiceField(choices=BudgetScope.choices)
    workspace = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                      help_text="Slug, for scope workspace.")
    connection = serializers.UUIDField(required=False, allow_null=True,
                                       help_text="Id, for scope connection.")
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    period = serializers.ChoiceField(choices=BudgetPeriod.choices, required=False)
    metric = serializers.ChoiceField(choices=BudgetMetric.choices, required=False)
    limit = serializers.DecimalField(max_digits=18, decimal_places=6, min_value=Decimal("0.000001"),
                                     help_text="Currency units (metric cost) or tokens.")
    warn_threshold = serializers.DecimalField(
        max_digits=4, decimal_places=3, min_value=Decimal("0.001"), max_value=Decimal(1),
        required=False,
        allow_null=True, help_text="Fraction of the limit that writes an audit event "
                                   "(default 0.8); null: no warning.")
    is_active = serializers.BooleanField(required=False)


class BudgetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """/api/v1/budgets/ and /api/v1/budgets/{id}/."""

    queryset = Budget.objects.none()
    serializer_class = BudgetOutputSerializer
    permission_classes = [IsAuthenticated]
    filter_backends: list = []

    def get_queryset(self):
        rows = Budget.objects.select_related("workspace", "connection").order_by("id")
        allowed = managed_workspace_ids(self.request.user)
        if allowed is not None:
            rows = rows.filter(scope=BudgetScope.WORKSPACE, workspace_id__in=allowed)
        for name in ("scope", "period", "metric"):
            if self.request.query_params.get(name):
                rows = rows.filter(**{name: self.request.query_params[name]})
        if self.request.query_params.get("workspace"):
            rows = rows.filter(workspace__slug=self.request.query_params["workspace"])
        return rows

    def _staff_only(self):
        if not self.request.user.is_staff:
            raise PermissionDenied("Only staff may change budgets.")

    def _present(self, budget, status_code=status.HTTP_200_OK):
        fresh = Budget.objects.select_related("workspace", "connection").get(pk=budget.pk)
        return Response(BudgetOutputSerializer(fresh).data, status=status_code)

    @extend_schema(request=BudgetInputSerializer, responses=BudgetOutputSerializer)
    def create(self, request):
        self._staff_only()
        data = BudgetInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        budget = budget_counters.budget_create(actor=request.user, **data.validated_data)
        return self._present(budget, status.HTTP_201_CREATED)

    @extend_schema(request=BudgetInputSerializer, responses=BudgetOutputSerializer)
    def partial_update(self, request, pk=None):
        budget = self.get_object()
        self._staff_only()
        data = BudgetInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        fixed = sorted(set(changes) & {"scope", "workspace", "connection"})
        if fixed:
            raise ValidationFailed(
                f"{', '.join(fixed)} cannot be changed: delete the budget and create another.",
                fields={f: ["Cannot be changed."] for f in fixed})
        budget = budget_counters.budget_update(budget=budget, actor=request.user, **changes)
        return self._present(budget)

    def destroy(self, request, pk=None):
        budget = self.get_object()
        self._staff_only()
        budget_counters.budget_delete(budget=budget, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
