"""Usage reports: totals match the calls made (the fake upstreams' own counts), grouping,
filters, latency percentiles (the same numbers on SQLite and PostgreSQL), permissions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from workspaces import budgets, services
from workspaces.models import UsageRecord

URL = "/api/v1/usage/"
HELLO = [{"role": "user", "content": "Hello"}]
KEY_A, KEY_B = "sk-usage-a-000000000001", "sk-usage-b-000000000002"


@pytest.fixture(autouse=True)
def _clean():
    cache.clear()
    budgets.clear_local_cache()
    yield
    cache.clear()


def test_usage_totals_match_the_calls_made(gateway, staff_client, upstream_factory,
                                           make_connection, make_key):
    up_a = upstream_factory(name="a", api_keys={KEY_A})
    up_b = upstream_factory(name="b", api_keys={KEY_B})
    conn_a = make_connection(up_a, key=KEY_A, name="conn-a")
    conn_b = make_connection(up_b, key=KEY_B, name="conn-b")
    ws1 = services.workspace_create(name="One", bindings={
        "chat": {"connection": str(conn_a.pk),
                 "fallbacks": [{"connection": str(conn_b.pk), "model": None}]},
        "embedding": {"connection": str(conn_b.pk), "model": "test-embedding"}})
    ws2 = services.workspace_create(name="Two", bindings={"chat": {"connection": str(conn_b.pk)}})
    key1, key2 = make_key(ws1), make_key(ws2)

    tokens = {"in": 0, "out": 0}

    def count(response):
        if response.status_code == 200:
            usage = response.json()["usage"]
            tokens["in"] += usage["prompt_tokens"]
            tokens["out"] += usage.get("completion_tokens") or 0

    for _ in range(4):
        count(gateway.post("/v1/chat/completions", key1, {"model": "chat", "messages": HELLO}))
    up_a.set_mode(500, times=2)  # two calls fall back to b
    for _ in range(2):
        count(gateway.post("/v1/chat/completions", key1, {"model": "chat", "messages": HELLO}))
    up_b.set_mode(401, times=1)  # one failure that does not fall back
    assert gateway.post("/v1/chat/completions", key2,
                        {"model": "chat", "messages": HELLO}).status_code == 502
    for _ in range(3):
        count(gateway.post("/v1/chat/completions", key2, {"model": "chat", "messages": HELLO}))
    count(gateway.post("/v1/embeddings", key1, {"model": "embedding", "input": ["x", "y"]}))
    response, _ = gateway.stream("/v1/chat/completions", key2,
                                 {"model": "chat", "messages": HELLO, "stream": True})
    assert response.status_code == 200

    report = staff_client.get(URL, {"group_by": "connection"}).json()
    by_conn = {r["connection_name"]: r for r in report["rows"]}
    assert by_conn["conn-a"]["calls"] == up_a.request_count == 6
    assert by_conn["conn-b"]["calls"] == up_b.request_count == 2 + 1 + 3 + 1 + 1
    assert by_conn["conn-a"]["errors"] == 2 and by_conn["conn-b"]["errors"] == 1
    stream_tokens = UsageRecord.objects.filter(stream=True).values_list(
        "input_tokens", "output_tokens").get()
    assert stream_tokens[1] > 0
    totals = report["totals"]
    assert totals["calls"] == up_a.request_count + up_b.request_count
    assert totals["input_tokens"] == tokens["in"] + stream_tokens[0]
    assert totals["output_tokens"] == tokens["out"] + stream_tokens[1]

    by_ws = {r["workspace"]: r for r in staff_client.get(URL).json()["rows"]}
    assert by_ws["one"]["calls"] == 4 + 2 * 2 + 1 and by_ws["two"]["calls"] == 1 + 3 + 1
    models = {r["model"]: r["calls"] for r in
              staff_client.get(URL, {"group_by": "model"}).json()["rows"]}
    assert models == {"test-model": 13, "test-embedding": 1}


def _records(ws, conn, latencies, *, at=None, model="m", status=200, cost="0.001"):
    made = [services.usage_record_create(
        workspace_id=ws.pk, connection_id=str(conn.pk) if conn else None, api_key_id=None,
        role="chat", model=model, endpoint="chat", stream=False, status_code=status,
        input_tokens=10, output_tokens=5, cost=Decimal(cost), latency_ms=latency).pk
        for latency in latencies]
    if at is not None:
        UsageRecord.objects.filter(pk__in=made).update(created_at=at)


@pytest.fixture
def data(db, make_connection, upstream_factory):
    up = upstream_factory()
    conn = make_connection(up, name="c1")
    other = make_connection(up, name="c2")
    ws = services.workspace_create(name="Alpha", bindings={"chat": {"connection": str(conn.pk)}})
    ws2 = services.workspace_create(name="Beta", bindings={"chat": {"connection": str(other.pk)}})
    return {"conn": conn, "other": other, "ws": ws, "ws2": ws2}


def test_latency_percentiles_interpolate_like_percentile_cont(staff_client, data):
    _records(data["ws"], data["conn"], range(1, 101))
    _records(data["ws"], data["conn"], [99999], status=504)  # errors are not latencies
    row = staff_client.get(URL).json()["rows"][0]
    assert row["calls"] == 101 and row["errors"] == 1
    assert row["latency_p50_ms"] == 50.5
    assert row["latency_p95_ms"] == 95.0  # 1 + 0.95 * 99 = 95.05 → 95.0 (1 decimal)
    assert row["cost"] == "0.10100000"


def test_group_by_day_with_since_and_until(staff_client, data):
    day1 = datetime(2030, 3, 1, 10, tzinfo=UTC)
    _records(data["ws"], data["conn"], [10, 20], at=day1)
    _records(data["ws"], data["conn"], [30], at=day1 + timedelta(days=1))
    _records(data["ws"], data["conn"], [40], at=day1 + timedelta(days=5))
    report = staff_client.get(URL, {"group_by": "day", "since": "2030-03-01",
                                    "until": "2030-03-02"}).json()
    assert [(r["day"], r["calls"]) for r in report["rows"]] == [("2030-03-01", 2),
                                                                ("2030-03-02", 1)]
    assert report["since"] == "2030-03-01T00:00:00Z" and report["until"] == "2030-03-03T00:00:00Z"
    both = staff_client.get(URL, {"group_by": "workspace,day", "since": "2030-03-01T00:00:00Z",
                                  "until": "2030-03-10"}).json()["rows"]
    assert [(r["workspace"], r["day"], r["calls"]) for r in both] == [
        ("alpha", "2030-03-01", 2), ("alpha", "2030-03-02", 1), ("alpha", "2030-03-06", 1)]
    # Without since: the 30 days before until.
    report = staff_client.get(URL, {"until": "2030-03-31"}).json()
    assert report["since"] == "2030-03-02T00:00:00Z" and report["totals"]["calls"] == 2


def test_filters_by_workspace_and_connection(staff_client, data):
    _records(data["ws"], data["conn"], [1, 2, 3])
    _records(data["ws2"], data["other"], [4])
    _records(data["ws"], data["other"], [5])
    rows = staff_client.get(URL, {"workspace": "alpha", "group_by": "connection"}).json()["rows"]
    assert {r["connection_name"]: r["calls"] for r in rows} == {"c1": 3, "c2": 1}
    rows = staff_client.get(URL, {"connection": str(data["other"].pk)}).json()["rows"]
    assert {r["workspace"]: r["calls"] for r in rows} == {"alpha": 1, "beta": 1}


def test_a_deleted_connection_stays_in_the_report_as_null(staff_client, data):
    _records(data["ws"], None, [1])
    rows = staff_client.get(URL, {"group_by": "connection"}).json()["rows"]
    assert rows == [dict(rows[0], connection=None, connection_name=None)]


@pytest.mark.parametrize("params,field", [
    ({"group_by": "week"}, "group_by"),
    ({"group_by": "day,day"}, "group_by"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2030-13-45"}, "until"),
    ({"connection": "not-a-uuid"}, "connection"),
    ({"since": "2030-03-05", "until": "2030-03-01"}, "since"),
    ({"until": "9999-12-31"}, "until"),
    ({"until": "0001-01-01"}, "until"),
])
def test_bad_parameters_are_400_naming_the_field(staff_client, data, params, field):
    response = staff_client.get(URL, params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_managers_see_only_their_workspaces(api_client, data):
    User = get_user_model()
    manager = User.objects.create_user("mgr", password="pw-mgr-12345")
    member = User.objects.create_user("mem", password="pw-mem-12345")
    services.membership_set(workspace=data["ws"], user=manager, role="manager")
    services.membership_set(workspace=data["ws"], user=member, role="member")
    _records(data["ws"], data["conn"], [1, 2])
    _records(data["ws2"], data["other"], [3])
    api_client.force_authenticate(manager)
    rows = api_client.get(URL).json()["rows"]
    assert [(r["workspace"], r["calls"]) for r in rows] == [("alpha", 2)]
    assert api_client.get(URL, {"workspace": "beta"}).status_code == 404
    assert api_client.get(URL, {"connection": str(data["other"].pk)}).json()["rows"] == []
    api_client.force_authenticate(member)
    assert api_client.get(URL).status_code == 403
    api_client.force_authenticate(None)
    assert api_client.get(URL).status_code == 401


def test_the_python_percentile_matches_postgresql_on_small_groups():
    from workspaces.usage import percentile

    assert percentile([], 0.5) is None
    assert percentile([7], 0.95) == 7.0
    assert percentile([1, 2], 0.5) == 1.5
    assert percentile([10, 20, 30, 40], 0.95) == pytest.approx(38.5)
