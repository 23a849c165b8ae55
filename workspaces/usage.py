"""Usage reports: calls, errors, tokens, cost and latency percentiles of the usage records,
grouped by workspace, connection, model and/or UTC day.

Counts and sums are one GROUP BY query. Latency percentiles (p50, p95, over answered calls,
status 200) use PostgreSQL's `percentile_cont ... WITHIN GROUP` in the same query; on other
databases (SQLite) they are computed in Python with the same formula (linear interpolation)
from one bounded query of (group, latency) pairs: at most LATENCY_SAMPLE_ROWS of the newest
matching calls, and the report says `latency_sampled: true` when there were more.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import connection as db_connection
from django.db.models import Aggregate, CharField, Count, FloatField, Q, Sum, Value
from django.db.models.functions import Cast, Coalesce, Concat, TruncDate
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from llmconn.errors import ValidationFailed

from .models import UsageRecord, Workspace

GROUPS = ("workspace", "connection", "model", "day", "api_key", "user")
DEFAULT_DAYS = 30
LATENCY_SAMPLE_ROWS = 100_000
# Workspaces and connections are grouped by id, or by the name kept on the row once they were
# deleted ("~name"), so that deleted ones stay apart and named.
_KEY = {"workspace": "ws_key", "connection": "conn_key", "model": "model", "day": "day",
        "api_key": "api_key_id", "user": "user_id"}
_ANSWERED = Q(status_code=200)


class PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont(p) WITHIN GROUP (ORDER BY expr)."""

    function = "percentile_cont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, percentile: float, **extra):
        super().__init__(expression, percentile=float(percentile), **extra)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """percentile_cont: linear interpolation between the closest ranks (as PostgreSQL does)."""
    if not sorted_values:
        return None
    position = p * (len(sorted_values) - 1)
    low, high = math.floor(position), math.ceil(position)
    if low == high:
        return float(sorted_values[low])
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def parse_group_by(value: str | None) -> list[str]:
    """`workspace`, `day`, or several comma-separated (`workspace,day`); default `workspace`."""
    names = [v.strip() for v in (value or "workspace").split(",") if v.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValidationFailed(
            f"group_by must be one or more of {', '.join(GROUPS)} (comma-separated, no repeats).",
            fields={"group_by": [f"Use {', '.join(GROUPS)}."]})
    return names


def parse_moment(value: str | None, *, name: str, end: bool = False) -> datetime | None:
    """A date (`2025-01-31`: the start of that UTC day, or its end when `end`) or an ISO
    datetime (naive means UTC)."""
    if value in (None, ""):
        return None
    try:
        # A bare date first: parse_datetime would read "2030-03-02" as its midnight.
        day = parse_date(value) if len(value) == 10 else None
        moment = None if day is not None else parse_datetime(value)
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        raise ValidationFailed(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 datetime.",
                               fields={name: ["Use YYYY-MM-DD or an ISO 8601 datetime."]})
    try:
        if moment is None:
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(),
                                      tzinfo=UTC)
        elif timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        moment.astimezone(UTC) - timedelta(days=DEFAULT_DAYS)  # representable either way
    except OverflowError:
        raise ValidationFailed(f"{name} is out of range.",
                               fields={name: ["Out of range."]}) from None
    return moment


def _records(*, since: datetime, until: datetime, workspace_ids=None, connection_id=None):
    rows = UsageRecord.objects.filter(created_at__gte=since, created_at__lt=until)
    if workspace_ids is not None:
        rows = rows.filter(workspace_id__in=list(workspace_ids))
    if connection_id is not None:
        rows = rows.filter(connection_id=connection_id)
    return rows.annotate(
        day=TruncDate("created_at", tzinfo=UTC),
        ws_key=Coalesce(Cast("workspace_id", CharField()),
                        Concat(Value("~"), "workspace_name", output_field=CharField())),
        conn_key=Coalesce(Cast("connection_id", CharField()),
                          Concat(Value("~"), "connection_name", output_field=CharField())),
    ).order_by()


_ESTIMATED = Q(usage_source="estimated")


def _totals_of(rows, postgres: bool) -> dict:
    aggregates = {
        # Rows whose tokens llmconn counted (the provider reported none): included in the
        # token and cost totals below, and shown apart so a report says how much is estimated.
        # (First: the totals' names shadow the fields once annotated.)
        "estimated_calls": Count("id", filter=_ESTIMATED),
        "estimated_input_tokens": Sum("input_tokens", filter=_ESTIMATED),
        "estimated_output_tokens": Sum("output_tokens", filter=_ESTIMATED),
        "calls": Count("id"), "errors": Count("id", filter=~_ANSWERED),
        "input_tokens": Sum("input_tokens"), "output_tokens": Sum("output_tokens"),
        "cost": Sum("cost"),
    }
    if postgres:
        aggregates["latency_p50_ms"] = PercentileCont("latency_ms", 0.5, filter=_ANSWERED)
        aggregates["latency_p95_ms"] = PercentileCont("latency_ms", 0.95, filter=_ANSWERED)
    return aggregates


def _clean(row: dict) -> dict:
    cost = row.get("cost")
    out = {
        "calls": row.get("calls") or 0,
        "errors": row.get("errors") or 0,
        "input_tokens": row.get("input_tokens") or 0,
        "output_tokens": row.get("output_tokens") or 0,
        "cost": None if cost is None else str(Decimal(cost).quantize(Decimal("0.00000001"))),
        "estimated_calls": row.get("estimated_calls") or 0,
        "estimated_input_tokens": row.get("estimated_input_tokens") or 0,
        "estimated_output_tokens": row.get("estimated_output_tokens") or 0,
    }
    for name in ("latency_p50_ms", "latency_p95_ms"):
        value = row.get(name)
        out[name] = None if value is None else round(float(value), 1)
    return out


def usage_report(*, group_by: list[str], since: datetime | None = None,
                 until: datetime | None = None, workspace_ids=None, connection_id=None) -> dict:
    """The usage report: {"group_by", "since", "until", "rows": [...], "totals": {...},
    "latency_sampled"}. `workspace_ids`: limit to these workspaces (None: all)."""
    until = until or timezone.now()
    since = since or until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise ValidationFailed("since must be before until.",
                               fields={"since": ["Must be before until."]})
    postgres = db_connection.vendor == "postgresql"
    records = _records(since=since, until=until, workspace_ids=workspace_ids,
                       connection_id=connection_id)
    keys = [_KEY[g] for g in group_by]
    grouped = list(records.values(*keys).annotate(**_totals_of(records, postgres))
                   .order_by(*keys))
    totals = records.aggregate(**_totals_of(records, postgres))
    sampled = False
    if not postgres:
        sampled = _python_percentiles(records, keys, grouped, totals)

    names = _group_names(group_by, grouped)
    rows = []
    for row in grouped:
        out = {}
        for group in group_by:
            if group == "workspace":
                key = row["ws_key"]
                if key is None or key.startswith("~"):  # deleted: the name kept on the rows
                    out["workspace"], out["workspace_name"] = None, (key or "~")[1:] or None
                else:
                    ws = names["workspace"].get(int(key))
                    out["workspace"] = ws.slug if ws else None
                    out["workspace_name"] = ws.name if ws else None
            elif group == "connection":
                key = row["conn_key"]
                if key is None or key.startswith("~"):
                    out["connection"], out["connection_name"] = None, (key or "~")[1:] or None
                else:
                    cid = uuid.UUID(key)
                    out["connection"] = str(cid)
                    out["connection_name"] = names["connection"].get(cid)
            elif group == "model":
                out["model"] = row["model"]
            elif group == "api_key":
                key = names["api_key"].get(row["api_key_id"])
                out["api_key"] = row["api_key_id"]
                out["api_key_name"] = key.name if key else None
                out["api_key_prefix"] = key.prefix if key else None
            elif group == "user":
                out["user"] = names["user"].get(row["user_id"])
                out["user_id"] = row["user_id"]
            else:
                out["day"] = row["day"].isoformat() if isinstance(row["day"], date) else None
        out.update(_clean(row))
        rows.append(out)
    return {"group_by": group_by, "since": _iso(since), "until": _iso(until), "rows": rows,
            "totals": _clean(totals), "latency_sampled": sampled}


def _group_names(group_by: list[str], grouped: list[dict]) -> dict:
    """The rows that name each group (one query per kind of group asked for)."""
    from django.contrib.auth import get_user_model

    from connections.models import Connection

    from .models import WorkspaceAPIKey

    names: dict = {"workspace": {}, "connection": {}, "api_key": {}, "user": {}}
    if "workspace" in group_by:
        ids = {int(r["ws_key"]) for r in grouped if r["ws_key"] and r["ws_key"][0] != "~"}
        names["workspace"] = {w.pk: w for w in Workspace.objects.filter(pk__in=ids)}
    if "connection" in group_by:
        ids = {uuid.UUID(r["conn_key"]) for r in grouped
               if r["conn_key"] and r["conn_key"][0] != "~"}
        names["connection"] = dict(Connection.objects.filter(pk__in=ids)
                                   .values_list("pk", "name"))
    if "api_key" in group_by:
        ids = {r["api_key_id"] for r in grouped if r["api_key_id"]}
        names["api_key"] = {k.pk: k for k in WorkspaceAPIKey.objects.filter(pk__in=ids)
                            .only("id", "name", "prefix")}
    if "user" in group_by:
        ids = {r["user_id"] for r in grouped if r["user_id"]}
        names["user"] = dict(get_user_model().objects.filter(pk__in=ids)
                             .values_list("pk", "username"))
    return names


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _python_percentiles(records, keys: list[str], grouped: list[dict], totals: dict) -> bool:
    """Fill latency_p50_ms / latency_p95_ms from one bounded query; True when sampled."""
    pairs = list(records.filter(_ANSWERED).order_by("-created_at")
                 .values_list(*keys, "latency_ms")[:LATENCY_SAMPLE_ROWS + 1]) if keys else [
        (v,) for v in records.filter(_ANSWERED).order_by("-created_at")
        .values_list("latency_ms", flat=True)[:LATENCY_SAMPLE_ROWS + 1]]
    sampled = len(pairs) > LATENCY_SAMPLE_ROWS
    pairs = pairs[:LATENCY_SAMPLE_ROWS]
    by_group: dict[tuple, list[int]] = defaultdict(list)
    everything: list[int] = []
    for pair in pairs:
        by_group[tuple(pair[:-1])].append(pair[-1])
        everything.append(pair[-1])
    for row in grouped:
        values = sorted(by_group.get(tuple(row[k] for k in keys), ()))
        row["latency_p50_ms"] = percentile(values, 0.5)
        row["latency_p95_ms"] = percentile(values, 0.95)
    everything.sort()
    totals["latency_p50_ms"] = percentile(everything, 0.5)
    totals["latency_p95_ms"] = percentile(everything, 0.95)
    return sampled


def spend_by_day(*, since: datetime, until: datetime, workspace_ids=None, connection_id=None,
                 series: str = "workspace") -> dict:
    """{"days": [...], "series": {name: [value per day]}} of cost (or calls where no price is
    known) for the admin chart."""
    report = usage_report(group_by=["day", series], since=since, until=until,
                          workspace_ids=workspace_ids, connection_id=connection_id)
    days = []
    day = since.astimezone(UTC).date()
    last = (until - timedelta(microseconds=1)).astimezone(UTC).date()
    while day <= last:
        days.append(day.isoformat())
        day += timedelta(days=1)
    index = {d: i for i, d in enumerate(days)}
    label_of = {"workspace": "workspace_name", "connection": "connection_name",
                "model": "model"}[series]
    values: dict[str, list] = {}
    for row in report["rows"]:
        name = row.get(label_of) or "(deleted)"
        values.setdefault(name, [0.0] * len(days))
        if row["day"] in index:
            values[name][index[row["day"]]] += float(row["cost"] or 0)
    return {"days": days, "series": values, "report": report}
