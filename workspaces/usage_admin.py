"""The admin's usage report: Workspaces › Usage reports (/admin/workspaces/usagereport/).

A filter form (since, until, workspace, connection, grouping, metric), a stacked bar chart
of the metric per UTC day drawn as SVG on the server (no JavaScript, no CDN), the report
table of workspaces.usage (the numbers GET /api/v1/usage/ gives), and the active budgets with
what they used this period. Read-only: budgets change through the API (and its services).
Registered by one import at the end of workspaces/admin.py.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone

from connections.models import Connection
from llmconn.errors import ValidationFailed

from . import budgets as budget_counters
from .models import Budget, UsageReport, Workspace
from .usage import GROUPS, usage_report

CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 760, 240, 64, 28
MAX_SERIES = 6
MAX_DAYS = 366  # one bar per day
COLORS = ("#417690", "#e0a03a", "#5b9c5b", "#b5546b", "#7d6bb5", "#3aa6b9", "#999999")
METRICS = {"calls": "Calls", "cost": "Cost", "tokens": "Tokens (in + out)", "errors": "Errors"}


class UsageFilterForm(forms.Form):
    since = forms.DateField(required=False, help_text="UTC day (default: 30 days ago).")
    until = forms.DateField(required=False, help_text="Through this UTC day (default: today).")
    workspace = forms.ModelChoiceField(Workspace.objects.order_by("name"), required=False,
                                       to_field_name="slug", empty_label="All workspaces")
    connection = forms.ModelChoiceField(Connection.objects.order_by("name").only("id", "name"),
                                        required=False, empty_label="All connections")
    series = forms.ChoiceField(choices=[(g, g.title()) for g in GROUPS if g != "day"],
                               initial="workspace", required=False, label="Group by")
    metric = forms.ChoiceField(choices=list(METRICS.items()), initial="calls", required=False)


def _value(row: dict, metric: str) -> float:
    if metric == "tokens":
        return float(row["input_tokens"] + row["output_tokens"])
    if metric == "cost":
        return float(row["cost"] or 0)
    return float(row[metric])


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value`."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def build_chart(*, days: list[str], rows: list[dict], series_key: str, metric: str) -> dict:
    """Geometry of a stacked bar chart (one bar per day, one colour per series) for the
    template's SVG: bars, axis ticks, legend. Series beyond MAX_SERIES are merged as other."""
    label_key = {"workspace": "workspace_name", "connection": "connection_name",
                 "model": "model"}[series_key]
    totals: dict[str, float] = {}
    for row in rows:
        name = row.get(label_key) or "(deleted)"
        totals[name] = totals.get(name, 0.0) + _value(row, metric)
    names = [n for n, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))]
    shown = names[:MAX_SERIES]
    if len(names) > MAX_SERIES:
        shown.append("other")
    per_day = {d: {} for d in days}
    for row in rows:
        name = row.get(label_key) or "(deleted)"
        name = name if name in shown else "other"
        if row["day"] in per_day:
            per_day[row["day"]][name] = per_day[row["day"]].get(name, 0.0) + _value(row, metric)
    top = _nice_max(max((sum(v.values()) for v in per_day.values()), default=0))
    plot_w, plot_h = CHART_WIDTH - CHART_LEFT - 8, CHART_HEIGHT - CHART_BOTTOM - 8
    slot = plot_w / max(1, len(days))
    bars, labels = [], []
    for i, day in enumerate(days):
        x = CHART_LEFT + i * slot + slot * 0.15
        y = 8 + plot_h
        for j, name in enumerate(shown):
            value = per_day[day].get(name, 0.0)
            if value <= 0:
                continue
            height = value / top * plot_h
            y -= height
            bars.append({"x": round(x, 1), "y": round(y, 1), "w": round(slot * 0.7, 1),
                         "h": round(height, 1), "color": COLORS[j % len(COLORS)],
                         "title": f"{day} · {name}: {value:g}"})
        if len(days) <= 14 or i % max(1, len(days) // 10) == 0:
            labels.append({"x": round(x + slot * 0.35, 1), "text": day[5:]})
    ticks = [{"y": round(8 + plot_h - plot_h * k / 4, 1), "text": f"{top * k / 4:g}"}
             for k in range(5)]
    legend = [{"name": name, "color": COLORS[j % len(COLORS)]} for j, name in enumerate(shown)]
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT,
            "bottom": 8 + plot_h, "right": CHART_WIDTH - 8, "bars": bars, "labels": labels,
            "ticks": ticks, "legend": legend, "empty": not bars}


def _budget_rows() -> list[dict]:
    rows = []
    for budget in Budget.objects.filter(is_active=True).select_related("workspace",
                                                                       "connection"):
        state = budget_counters._state(budget)
        start, end = state.bounds()
        used = budget_counters.used(state)
        described = state.describe(used, start, end)
        rows.append({"label": budget.label, "used": described["used"],
                     "limit": described["limit"], "resets_at": described["resets_at"],
                     "percent": min(100, round(100 * used / state.limit_units)),
                     "exceeded": used >= state.limit_units})
    return rows


@admin.register(UsageReport)
class UsageReportAdmin(admin.ModelAdmin):
    """Usage per day with a chart, the report table and budgets; nothing to add or change."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        form = UsageFilterForm(request.GET or None)
        data = form.cleaned_data if form.is_valid() else {}
        today = timezone.now().astimezone(UTC).date()
        until_day = data.get("until") or today
        try:
            since_day = data.get("since") or until_day - timedelta(days=29)
        except OverflowError:
            since_day = until_day
        series = data.get("series") or "workspace"
        metric = data.get("metric") or "calls"
        from .usage import parse_moment

        error, chart, report = None, None, None
        try:
            if (until_day - since_day).days > MAX_DAYS:
                raise ValidationFailed(f"Choose at most {MAX_DAYS} days.")
            since = parse_moment(since_day.isoformat(), name="since")
            until = parse_moment(until_day.isoformat(), name="until", end=True)
            filters = {"workspace_ids": [data["workspace"].pk] if data.get("workspace") else None,
                       "connection_id": data["connection"].pk if data.get("connection") else None}
            report = usage_report(group_by=[series], since=since, until=until, **filters)
            daily = usage_report(group_by=["day", series], since=since, until=until, **filters)
            days, day = [], since_day
            while day <= until_day:
                days.append(day.isoformat())
                day += timedelta(days=1)
            chart = build_chart(days=days, rows=daily["rows"], series_key=series, metric=metric)
        except ValidationFailed as exc:
            error = exc.message
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Usage report",
            "form": form,
            "error": error,
            "chart": chart,
            "report": report,
            "series": series,
            "series_label": {"workspace": "Workspace", "connection": "Connection",
                             "model": "Model"}[series],
            "metric_label": METRICS[metric],
            "since_day": since_day,
            "until_day": until_day,
            "budgets": _budget_rows(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/workspaces/usage_report.html", context)
