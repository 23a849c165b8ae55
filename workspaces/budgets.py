"""Budgets: their services (budget_create, budget_update, budget_delete, at the end) and what
they do at call time: counters in the shared cache, the check before a call, the count after.

A budget caps the cost or the tokens (input + output) of a workspace's or a connection's calls
per UTC calendar day or month (models.Budget). Checking it must not cost a database query per
call, so:

- Every process keeps the active budgets in memory (`_BUDGETS`), reloaded when the budgets'
  version moves (the budget services bump it, llmconn.versions.BUDGETS) or after
  the maximum age of cached entries (constants).
- Spending is one integer per (target, period start, metric) in the shared cache
  (`spend_key`): tokens, or cost in units of 1e-8 (the precision of UsageRecord.cost). After a
  call's UsageRecord is written the counters of the budgets that apply are incremented
  atomically (cache.incr: Redis INCRBY). So two processes (or hosts) share one count.
- A counter that is missing (a new period, a flushed or evicted cache) is rebuilt from the
  UsageRecords of the period (one aggregate query) and put with cache.add, so that concurrent
  rebuilders agree; the Celery task `budget_reconcile` corrects drift periodically.
- A call is refused when a counter is at or over its limit: the call that crosses the limit is
  the last one let through (a budget may be overshot by one call's cost).
- Crossing the warn threshold (and reaching the limit) writes one audit event per period:
  a cache flag lets only the first process try, and a conditional UPDATE of
  Budget.warned_period / exceeded_period makes it once even after a cache flush.
- If the cache cannot be read, budgets are not enforced (calls go on, a warning is logged):
  availability over a cap that cannot be counted.

`now` is the clock of periods; tests replace it (monkeypatch `workspaces.budgets.now`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from audit.services import audit_record
from connections.models import Connection
from llmconn import versions
from llmconn.errors import ApplicationError, Conflict, ValidationFailed

from .constants import cache_max_age
from .models import Budget, BudgetMetric, BudgetPeriod, BudgetScope, UsageRecord, Workspace

logger = logging.getLogger(__name__)


COST_UNITS = 10 ** 8  # counters hold cost in 1e-8 currency units (UsageRecord.cost precision)
_TTL = {BudgetPeriod.DAY: 3 * 86400, BudgetPeriod.MONTH: 40 * 86400}


def now() -> datetime:
    """The clock budgets use for periods (replaced in tests)."""
    return timezone.now()


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month containing `at`."""
    at = at.astimezone(UTC)
    if period == BudgetPeriod.DAY:
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def to_units(metric: str, amount) -> int:
    """A limit or a spend as the integer the counters hold."""
    if amount is None:
        return 0
    if metric == BudgetMetric.TOKENS:
        return int(amount)
    return int((Decimal(str(amount)) * COST_UNITS).to_integral_value())


def from_units(metric: str, units: int) -> Decimal | int:
    if metric == BudgetMetric.TOKENS:
        return int(units)
    return (Decimal(units) / COST_UNITS).quantize(Decimal("0.00000001"))


def show(metric: str, units: int) -> str:
    """Units as the API shows them: "1200" tokens, "2.50000000" cost."""
    return format(from_units(metric, units), "d" if metric == BudgetMetric.TOKENS else "f")


@dataclass(frozen=True)
class BudgetState:
    """What a call needs to know about one active budget (loaded once per revision)."""

    id: int
    label: str
    name: str
    scope: str
    target_id: str
    period: str
    metric: str
    limit: Decimal
    limit_units: int
    warn_units: int | None
    version: int  # changes when the budget is edited: its events may be written again

    def bounds(self, at: datetime | None = None) -> tuple[datetime, datetime]:
        return period_bounds(self.period, at or now())

    def key(self, start: datetime) -> str:
        return spend_key(self.scope, self.target_id, self.period, start, self.metric)

    def describe(self, used_units: int, start: datetime, end: datetime) -> dict:
        """The budget as error bodies and the API show it."""
        return {"id": self.id, "name": self.name, "scope": self.scope, "target": self.target_id,
                "period": self.period, "metric": self.metric,
                "limit": show(self.metric, self.limit_units),
                "used": show(self.metric, used_units),
                "period_start": start.isoformat().replace("+00:00", "Z"),
                "resets_at": end.isoformat().replace("+00:00", "Z")}


def spend_key(scope: str, target_id, period: str, start: datetime, metric: str) -> str:
    """Cache key of the spend counter of a target in one period."""
    return f"llmconn:spend:{scope}:{target_id}:{period}:{start:%Y%m%d}:{metric}"


class BudgetExceeded(ApplicationError):
    """A call refused because a budget of its workspace or connection is used up."""

    status_code = 429
    code = "budget_exceeded"

    def __init__(self, state: BudgetState, used_units: int, start: datetime, end: datetime):
        self.state = state
        self.budget = state.describe(used_units, start, end)
        self.resets_at = end
        self.retry_after = max(1, int((end - now()).total_seconds()))
        unit = "tokens" if state.metric == BudgetMetric.TOKENS else "in cost"
        super().__init__(
            f"Budget {state.label} is used up: {self.budget['used']} of {self.budget['limit']} "
            f"{unit} this {'day' if state.period == BudgetPeriod.DAY else 'month'}. It resets "
            f"at {self.budget['resets_at']} (UTC); ask an admin to raise it.",
            extra={"budget": self.budget})


# --- active budgets, per process --------------------------------------------------------------

# (revision, loaded at (monotonic), {(scope, target id): (BudgetState, ...)})
_BUDGETS: list = [None, 0.0, {}]
_LOCK = threading.Lock()


def _state(budget: Budget) -> BudgetState:
    target = str(budget.workspace_id if budget.scope == BudgetScope.WORKSPACE
                 else budget.connection_id)
    limit_units = max(1, to_units(budget.metric, budget.limit))
    warn = None
    if budget.warn_threshold is not None:
        warn = max(1, int(limit_units * budget.warn_threshold))
    return BudgetState(
        id=budget.pk, label=budget.label, name=budget.name, scope=budget.scope,
        target_id=target, period=budget.period, metric=budget.metric, limit=budget.limit,
        limit_units=limit_units, warn_units=warn,
        version=int(budget.updated_at.timestamp() * 1000) if budget.updated_at else 0)


def _load() -> dict:
    found: dict[tuple[str, str], list[BudgetState]] = {}
    for budget in Budget.objects.filter(is_active=True).select_related("workspace", "connection"):
        state = _state(budget)
        found.setdefault((state.scope, state.target_id), []).append(state)
    return {k: tuple(v) for k, v in found.items()}


def _version(revision) -> int | None:
    """The budgets' version (llmconn.versions.BUDGETS) in a call's versions (None: unknown)."""
    if revision is None:
        return None
    return revision.get(versions.BUDGETS)


def active_budgets(revision) -> dict:
    """{(scope, target id): (BudgetState, ...)} of every active budget, from memory while the
    budgets' version has not moved (a database query otherwise). `revision`: the call's
    llmconn.versions.Versions."""
    cached_revision, loaded_at, budgets = _BUDGETS
    fresh = time.monotonic() - loaded_at < cache_max_age()
    revision = _version(revision)  # read before the query
    if revision is not None and cached_revision == revision and fresh:
        return budgets
    budgets = _load()
    if revision is not None:
        with _LOCK:
            _BUDGETS[:] = [revision, time.monotonic(), budgets]
    return budgets


def cached_budgets(revision) -> dict | None:
    """`active_budgets(revision)` from memory only; None when it would need a query."""
    cached_revision, loaded_at, budgets = _BUDGETS
    if (cached_revision is None or cached_revision != revision.values.get(versions.BUDGETS)
            or time.monotonic() - loaded_at >= cache_max_age()):
        return None
    return budgets


def clear_local_cache() -> None:
    """Forget the budgets this process loaded (tests)."""
    _BUDGETS[:] = [None, 0.0, {}]


def budgets_for(*, workspace_id, connection_ids=(), revision=None
                ) -> list[BudgetState]:
    """The active budgets of a workspace and of the given connections."""
    budgets = active_budgets(revision)
    if not budgets:
        return []
    states = list(budgets.get((BudgetScope.WORKSPACE, str(workspace_id)), ()))
    for cid in connection_ids:
        states += budgets.get((BudgetScope.CONNECTION, str(cid)), ())
    return states


# --- counters ---------------------------------------------------------------------------------

def _spent_in_database(state: BudgetState, start: datetime, end: datetime) -> int:
    rows = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
    if state.scope == BudgetScope.WORKSPACE:
        rows = rows.filter(workspace_id=int(state.target_id))
    else:
        rows = rows.filter(connection_id=state.target_id)
    if state.metric == BudgetMetric.TOKENS:
        total = rows.aggregate(t=Sum(F("input_tokens") + F("output_tokens")))["t"]
    else:
        total = rows.aggregate(t=Sum("cost"))["t"]
    return to_units(state.metric, total or 0)


def _rebuild(state: BudgetState, start: datetime, end: datetime) -> int:
    """Put a missing counter back from the usage records; the value now in the cache."""
    value = _spent_in_database(state, start, end)
    if cache.add(state.key(start), value, timeout=_TTL[state.period]):
        return value
    current = cache.get(state.key(start))  # another process rebuilt it first
    return int(current) if current is not None else value


def used(state: BudgetState, at: datetime | None = None) -> int:
    """What a budget's target spent in the current period (units), from the counter."""
    start, end = state.bounds(at)
    try:
        value = cache.get(state.key(start))
        return int(value) if value is not None else _rebuild(state, start, end)
    except Exception:  # noqa: BLE001 - cache down: count from the database
        return _spent_in_database(state, start, end)


def read(states: list[BudgetState], extra_keys=()) -> tuple[dict, dict]:
    """({state id: used units}, {extra key: value}) in one cache round trip (missing counters
    rebuilt). Raises whatever the cache raises."""
    at = now()
    bounds = {s.id: s.bounds(at) for s in states}
    keys = [s.key(bounds[s.id][0]) for s in states]
    values = cache.get_many([*keys, *extra_keys]) if (keys or extra_keys) else {}
    spent = {}
    for state, key in zip(states, keys):
        value = values.get(key)
        spent[state.id] = int(value) if value is not None else _rebuild(state, *bounds[state.id])
    return spent, {k: values.get(k) for k in extra_keys}


def exceeded(state: BudgetState, used_units: int) -> BudgetExceeded | None:
    """The refusal for a budget at or over its limit, else None."""
    if used_units < state.limit_units:
        return None
    start, end = state.bounds()
    _notify(state, used_units, start, end)  # e.g. a budget created below what was spent
    return BudgetExceeded(state, used_units, start, end)


def add_usage(*, workspace_id, connection_id, input_tokens: int, output_tokens: int,
              cost: Decimal | None, revision=None, recorded: bool = True) -> None:
    """Count one recorded call in the counters of the budgets it falls under (after its
    UsageRecord was written: a rebuilt counter already includes it; `recorded=False`: its row
    is in the usage spool, so a rebuilt counter adds it)."""
    states = budgets_for(workspace_id=workspace_id,
                         connection_ids=[connection_id] if connection_id else (),
                         revision=revision)
    for state in states:
        amount = (int(input_tokens or 0) + int(output_tokens or 0)
                  if state.metric == BudgetMetric.TOKENS else to_units(state.metric, cost))
        if amount <= 0:
            continue
        start, end = state.bounds()
        try:
            try:
                value = cache.incr(state.key(start), amount)
            except ValueError:  # missing: rebuild from the records (which include this call)
                value = _spent_in_database(state, start, end) + (0 if recorded else amount)
                if not cache.add(state.key(start), value, timeout=_TTL[state.period]):
                    value = cache.incr(state.key(start), amount)
        except Exception:  # noqa: BLE001 - a cache outage must not fail the call
            logger.warning("Budget counter of %s not updated (cache unavailable).", state.label)
            continue
        _notify(state, int(value), start, end)


# --- audit events -----------------------------------------------------------------------------

def _notify(state: BudgetState, value: int, start: datetime, end: datetime) -> None:
    if state.warn_units is not None and value >= state.warn_units:
        _notify_once(state, "warn", value, start, end)
    if value >= state.limit_units:
        _notify_once(state, "exceeded", value, start, end)


def _notify_once(state: BudgetState, kind: str, value: int, start: datetime,
                 end: datetime) -> None:
    """One audit event per budget, kind and period, whichever process gets here first."""
    flag = f"llmconn:budget-event:{kind}:{state.id}:{state.version}:{start:%Y%m%d}"
    try:
        if not cache.add(flag, 1, timeout=_TTL[state.period]):
            return
    except Exception:  # noqa: BLE001 - the database below still writes it once
        pass
    from audit.services import audit_record

    field = "warned_period" if kind == "warn" else "exceeded_period"
    try:
        with transaction.atomic():
            changed = (Budget.objects.filter(pk=state.id).exclude(**{field: start})
                       .update(**{field: start}))
            if changed:
                audit_record(
                    action=f"budget.{kind}", target=("budget", str(state.id), state.label),
                    extra={"budget": state.describe(value, start, end),
                           "threshold": "warn" if kind == "warn" else "limit"})
    except Exception:  # noqa: BLE001 - a lost event must not fail the call
        logger.exception("Could not record the %s event of budget %s", kind, state.label)
    else:
        if changed:
            logger.warning("Budget %s: %s (%s of %s).", state.label,
                           "warn threshold crossed" if kind == "warn" else "limit reached",
                           from_units(state.metric, value), state.limit)


# --- reconciliation ---------------------------------------------------------------------------

def reconcile(*, at: datetime | None = None) -> int:
    """Correct every active budget's counter of the current period from the usage records.

    Reads the counter, sums the records, reads the counter again: if calls came in between,
    the budget is left for the next run (its counter is moving); otherwise the difference is
    added atomically (INCRBY), so a call counted meanwhile is not lost. Returns how many
    counters changed.
    """
    changed = 0
    for states in active_budgets(None).values():
        for state in states:
            start, end = state.bounds(at)
            key = state.key(start)
            before = cache.get(key)
            total = _spent_in_database(state, start, end)
            if before is None:
                changed += cache.add(key, total, timeout=_TTL[state.period])
                continue
            after = cache.get(key)
            if after != before or int(after) == total:
                continue
            try:
                cache.incr(key, total - int(after))
                changed += 1
            except ValueError:
                cache.add(key, total, timeout=_TTL[state.period])
    return changed


# --- the budgets themselves: create, change, delete (the API, the admin and imports call these) --

BUDGET_FIELDS = ("name", "period", "metric", "limit", "warn_threshold", "is_active")


def _budget_target(*, scope: str, workspace, connection) -> tuple[Workspace | None,
                                                                    Connection | None]:
    if scope not in BudgetScope.values:
        raise ValidationFailed(f"scope must be one of {', '.join(BudgetScope.values)}.",
                               fields={"scope": ["Invalid scope."]})
    if scope == BudgetScope.WORKSPACE:
        if connection not in (None, ""):
            raise ValidationFailed("A workspace budget names no connection.",
                                   fields={"connection": ["Must be empty for scope workspace."]})
        if isinstance(workspace, Workspace):
            return workspace, None
        found = Workspace.objects.filter(slug=str(workspace or "")).first()
        if found is None:
            raise ValidationFailed("Unknown workspace.", code="unknown_workspace",
                                   fields={"workspace": ["Unknown workspace (slug)."]})
        return found, None
    if workspace not in (None, ""):
        raise ValidationFailed("A connection budget names no workspace.",
                               fields={"workspace": ["Must be empty for scope connection."]})
    if isinstance(connection, Connection):
        return None, connection
    try:
        pk = uuid.UUID(str(connection))
    except ValueError:
        raise ValidationFailed("connection must be a connection id.",
                               fields={"connection": ["Not a valid connection id (UUID)."]}
                               ) from None
    found = Connection.objects.filter(pk=pk).first()
    if found is None:
        raise ValidationFailed("Unknown connection.", code="unknown_connection",
                               fields={"connection": ["Unknown connection."]})
    return None, found


def _save_budget(budget: Budget) -> None:
    budget.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            budget.save()
    except IntegrityError as exc:
        raise Conflict(f"{budget.target_name[0].upper()}{budget.target_name[1:]} already has "
                       f"a {budget.period} {budget.metric} budget: change that one.",
                       code="budget_exists") from exc


@transaction.atomic
def budget_create(*, scope: str, workspace=None, connection=None, limit,
                  period: str = BudgetPeriod.MONTH, metric: str = BudgetMetric.COST,
                  warn_threshold: Decimal | None = Decimal("0.8"), name: str = "",
                  is_active: bool = True, actor=None) -> Budget:
    """Cap a workspace's or a connection's cost or tokens per day or month."""
    ws, conn = _budget_target(scope=scope, workspace=workspace, connection=connection)
    budget = Budget(scope=scope, workspace=ws, connection=conn, period=period, metric=metric,
                    limit=limit, warn_threshold=warn_threshold, name=(name or "").strip(),
                    is_active=is_active)
    _save_budget(budget)
    audit_record(action="budget.create", target=("budget", str(budget.pk), budget.label),
                 actor=actor, changed_fields=["scope", *BUDGET_FIELDS],
                 extra={"scope": scope, "target": str(ws.pk if ws else conn.pk),
                        "period": period, "metric": metric, "limit": str(limit)})
    versions.bump(versions.BUDGETS)
    return budget


@transaction.atomic
def budget_update(*, budget: Budget, actor=None, **changes: Any) -> Budget:
    """Change a budget's name, period, metric, limit, warn threshold or activity (not its
    target). A changed limit or threshold may warn again in the current period."""
    unknown = sorted(set(changes) - set(BUDGET_FIELDS))
    if unknown:
        raise ValidationFailed(f"Cannot change {', '.join(unknown)} (delete the budget and "
                               "create another).", fields={f: ["Cannot be changed."]
                                                           for f in unknown})
    current = Budget.objects.select_for_update(of=("self",)).select_related(
        "workspace", "connection").get(pk=budget.pk)
    before = {f: getattr(current, f) for f in BUDGET_FIELDS}
    for field, value in changes.items():
        setattr(current, field, (value or "").strip() if field == "name" else value)
    changed = [f for f in BUDGET_FIELDS if getattr(current, f) != before[f]]
    if {"limit", "warn_threshold", "period", "metric"} & set(changed):
        current.warned_period = current.exceeded_period = None
    _save_budget(current)
    audit_record(action="budget.update", target=("budget", str(current.pk), current.label),
                 actor=actor, changed_fields=changed,
                 extra={f: str(getattr(current, f)) for f in changed})
    versions.bump(versions.BUDGETS)
    return current


@transaction.atomic
def budget_delete(*, budget: Budget, actor=None) -> None:
    """Remove a budget (calls are no longer capped by it)."""
    audit_record(action="budget.delete", target=("budget", str(budget.pk), budget.label),
                 actor=actor)
    Budget.objects.filter(pk=budget.pk).delete()
    versions.bump(versions.BUDGETS)
