"""Budgets at call time: refused at the limit (429 naming the budget and its reset), counted in
the shared cache, rebuilt from the usage records, reset at the period boundary (the budgets
clock is injected), warned once per period in the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.utils import timezone

from audit.models import AuditEvent
from workspaces import budgets, services
from workspaces.client import LLMError, Message, WorkspaceClient
from workspaces.models import Budget, UsageRecord

HELLO = [{"role": "user", "content": "Hello"}]
KEY1, KEY2 = "sk-budget-primary-00000001", "sk-budget-spare-000000002"


def _z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture(autouse=True)
def _clock(monkeypatch):
    """Budgets see a fixed time (now, when the test starts: usage records carry real
    timestamps), moved by tests with clock.set(...)."""
    cache.clear()
    budgets.clear_local_cache()

    class Clock:
        now = timezone.now()

        @property
        def day(self):
            return budgets.period_bounds("day", self.now)

        @property
        def month(self):
            return budgets.period_bounds("month", self.now)

        def set(self, moment):
            self.now = moment

    clock = Clock()
    monkeypatch.setattr(budgets, "now", lambda: clock.now)
    yield clock
    cache.clear()
    budgets.clear_local_cache()


@pytest.fixture
def team(upstream_factory, make_connection, make_key):
    up1 = upstream_factory(name="primary", api_keys={KEY1})
    up2 = upstream_factory(name="spare", api_keys={KEY2})
    c1 = make_connection(up1, key=KEY1, name="primary")
    c2 = make_connection(up2, key=KEY2, name="spare")
    ws = services.workspace_create(name="Budgeted", bindings={"chat": {"connection": str(c1.pk)}})
    return {"ups": (up1, up2), "conns": (c1, c2), "ws": ws, "key": make_key(ws)}


def chat(gateway, team):
    return gateway.post("/v1/chat/completions", team["key"], {"model": "chat", "messages": HELLO})


def tokens_per_call(gateway, team) -> int:
    """Make one call and return its tokens (the fake upstream's count is deterministic)."""
    usage = chat(gateway, team).json()["usage"]
    return usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_workspace_token_budget_refuses_calls_at_the_limit(gateway, team, _clock):
    per_call = tokens_per_call(gateway, team)
    budget = budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                                    metric="tokens", limit=3 * per_call, name="team daily")
    assert chat(gateway, team).status_code == 200
    assert chat(gateway, team).status_code == 200  # 3 calls: the limit is reached
    response = chat(gateway, team)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    reset = _clock.day[1]
    assert "'team daily'" in error["message"] and _z(reset) in error["message"]
    assert error["budget"]["id"] == budget.pk
    assert error["budget"]["resets_at"] == _z(reset)
    assert error["budget"]["used"] == str(3 * per_call)
    assert response.headers["Retry-After"] == str(int((reset - _clock.now).total_seconds()))
    assert response.headers["x-should-retry"] == "false"
    assert team["ups"][0].request_count == 3  # the refused call never reached the provider
    assert UsageRecord.objects.filter(workspace=team["ws"]).count() == 3


def test_the_budget_resets_at_the_period_boundary(gateway, team, _clock):
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=per_call)
    assert chat(gateway, team).status_code == 429
    end = _clock.day[1]
    _clock.set(end - timedelta(seconds=1))
    assert chat(gateway, team).status_code == 429
    _clock.set(end)  # a new day: a new counter
    assert chat(gateway, team).status_code == 200
    assert chat(gateway, team).status_code == 429


def test_a_monthly_cost_budget_uses_the_connection_price_override(
        gateway, team, _clock):
    from connections.services import connection_update

    connection_update(connection=team["conns"][0],
                      input_cost_per_million_tokens=Decimal("1000000"),  # 1 per token
                      output_cost_per_million_tokens=Decimal("2000000"))
    response = chat(gateway, team)
    usage = response.json()["usage"]
    cost = usage["prompt_tokens"] + 2 * usage["completion_tokens"]
    record = UsageRecord.objects.get(workspace=team["ws"])
    assert record.cost == Decimal(cost)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="month",
                           metric="cost", limit=Decimal(cost) * 2)
    assert chat(gateway, team).status_code == 200
    response = chat(gateway, team)
    assert response.status_code == 429
    end = _clock.month[1]
    assert response.json()["error"]["budget"]["resets_at"] == _z(end)
    _clock.set(end)
    assert chat(gateway, team).status_code == 200


def test_a_used_up_connection_budget_moves_calls_to_the_fallback(gateway, team):
    c1, c2 = team["conns"]
    services.workspace_update(workspace=team["ws"], bindings={"chat": {
        "fallbacks": [{"connection": str(c2.pk), "model": None}]}})
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="connection", connection=c1, period="day", metric="tokens",
                           limit=per_call)
    response = chat(gateway, team)
    assert response.status_code == 200
    assert response.headers["x-llmconn-connection"] == "spare"
    assert [up.request_count for up in team["ups"]] == [1, 1]
    budgets.budget_create(scope="connection", connection=c2, period="day", metric="tokens",
                           limit=per_call)
    response = chat(gateway, team)
    assert response.status_code == 429
    assert "connection 'primary'" in response.json()["error"]["message"]


def test_a_connection_budget_counts_calls_from_every_workspace(
        gateway, team, make_workspace, make_key):
    other = make_key(make_workspace("Other", chat=team["conns"][0]))
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="connection", connection=team["conns"][0], period="day",
                           metric="tokens", limit=2 * per_call)
    assert gateway.post("/v1/chat/completions", other,
                        {"model": "chat", "messages": HELLO}).status_code == 200
    assert chat(gateway, team).status_code == 429
    assert gateway.post("/v1/chat/completions", other,
                        {"model": "chat", "messages": HELLO}).status_code == 429


def test_a_flushed_counter_is_rebuilt_from_the_usage_records(gateway, team):
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=2 * per_call)
    assert chat(gateway, team).status_code == 200
    cache.clear()  # Redis flushed: counters and the revision stamp are gone
    budgets.clear_local_cache()
    assert chat(gateway, team).status_code == 429
    state = budgets.budgets_for(workspace_id=team["ws"].pk)[0]
    assert budgets.used(state) == 2 * per_call


def test_crossing_the_warn_threshold_writes_one_audit_event_per_period(gateway, team, _clock):
    per_call = tokens_per_call(gateway, team)
    budget = budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                                    metric="tokens", limit=10 * per_call,
                                    warn_threshold=Decimal("0.25"))
    for _ in range(4):
        assert chat(gateway, team).status_code == 200
    cache.clear()  # even with the cache flag gone, the database says it was written
    budgets.clear_local_cache()
    assert chat(gateway, team).status_code == 200
    events = AuditEvent.objects.filter(action="budget.warn", target_id=str(budget.pk))
    assert events.count() == 1
    assert events.get().extra["budget"]["period_start"] == _z(_clock.day[0])
    _clock.set(_clock.day[1] + timedelta(hours=1))
    for _ in range(3):
        chat(gateway, team)
    assert events.count() == 2


def test_reaching_the_limit_writes_one_exceeded_event(gateway, team):
    per_call = tokens_per_call(gateway, team)
    budget = budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                                    metric="tokens", limit=per_call, warn_threshold=None)
    chat(gateway, team)
    chat(gateway, team)
    assert AuditEvent.objects.filter(action="budget.exceeded",
                                     target_id=str(budget.pk)).count() == 1
    assert not AuditEvent.objects.filter(action="budget.warn").exists()


def test_an_inactive_budget_does_not_refuse(gateway, team):
    per_call = tokens_per_call(gateway, team)
    budget = budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                                    metric="tokens", limit=per_call)
    assert chat(gateway, team).status_code == 429
    budgets.budget_update(budget=budget, is_active=False)
    assert chat(gateway, team).status_code == 200
    budgets.budget_update(budget=budget, is_active=True, limit=100 * per_call)
    assert chat(gateway, team).status_code == 200


def test_the_python_client_gets_the_same_refusal(gateway, team, _clock):
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=per_call)
    with pytest.raises(LLMError) as info:
        async_to_sync(WorkspaceClient(team["ws"].slug).complete)([Message.user("Hello")])
    assert info.value.status == 429 and info.value.code == "budget_exceeded"
    assert info.value.budget["resets_at"] == _z(_clock.day[1])


def test_a_budget_check_makes_no_database_query_when_warm(gateway, team,
                                                          django_assert_num_queries):
    from workspaces import calls
    from workspaces.resolution import current_revision, resolve

    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=100 * per_call)
    revision = current_revision()
    resolved = resolve(workspace_id=team["ws"].pk, role="chat", revision=revision)
    calls.plan_call(resolved=resolved, api_key_id=None, endpoint="chat", revision=revision,
                    with_call=False)  # loads budgets, rebuilds the counter
    with django_assert_num_queries(0):
        calls.plan_call(resolved=resolved, api_key_id=None, endpoint="chat",
                        revision=revision, with_call=False)


def test_reconcile_corrects_a_drifted_counter(gateway, team):
    per_call = tokens_per_call(gateway, team)
    budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                           metric="tokens", limit=100 * per_call)
    chat(gateway, team)
    state = budgets.budgets_for(workspace_id=team["ws"].pk)[0]
    key = state.key(state.bounds()[0])
    cache.set(key, 5)  # drifted (e.g. an increment lost in a cache outage)
    from workspaces.tasks import budget_reconcile_task

    assert budget_reconcile_task.delay().get() == 1
    assert cache.get(key) == 2 * per_call
    assert budget_reconcile_task.delay().get() == 0  # nothing left to correct


def test_period_bounds_are_utc_days_and_months():
    at = datetime(2031, 12, 31, 23, 30, tzinfo=UTC)
    assert budgets.period_bounds("day", at) == (datetime(2031, 12, 31, tzinfo=UTC),
                                                datetime(2032, 1, 1, tzinfo=UTC))
    assert budgets.period_bounds("month", at) == (datetime(2031, 12, 1, tzinfo=UTC),
                                                  datetime(2032, 1, 1, tzinfo=UTC))
    feb = datetime(2032, 2, 29, 5, tzinfo=UTC) + timedelta(hours=1)
    assert budgets.period_bounds("month", feb)[1] == datetime(2032, 3, 1, tzinfo=UTC)


def test_budgets_table_is_untouched_by_calls_below_the_threshold(gateway, team):
    per_call = tokens_per_call(gateway, team)
    budget = budgets.budget_create(scope="workspace", workspace=team["ws"], period="day",
                                    metric="tokens", limit=100 * per_call)
    chat(gateway, team)
    budget.refresh_from_db()
    assert budget.warned_period is None and budget.exceeded_period is None
    assert Budget.objects.count() == 1
