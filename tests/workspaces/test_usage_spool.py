"""The usage spool: a usage row the database does not take now is kept (Redis list, else a
file under var/) and written later, in order, once; the outage tests with a real PostgreSQL
restart are in test_usage_outage.py."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import OperationalError

from workspaces import budgets, calls, services, usage_spool
from workspaces.models import UsageRecord

from .conftest import _require_postgres

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """An empty spool: its own var/ directory and an empty Redis list."""
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    monkeypatch.setattr(usage_spool, "DRAIN_INTERVAL_SECONDS", 3600)  # drained by the test
    client = usage_spool._client()
    if client is not None:
        client.delete(usage_spool.REDIS_KEY, usage_spool.LOCK_KEY)
    yield tmp_path / "usage-spool"
    if client is not None:
        client.delete(usage_spool.REDIS_KEY, usage_spool.LOCK_KEY)


@pytest.fixture
def row(upstream, make_connection, make_workspace):
    _require_postgres()
    conn = make_connection(upstream, name="primary")
    ws = make_workspace("Spooled", chat=conn)
    return dict(workspace_id=ws.pk, connection_id=str(conn.pk), api_key_id=None, role="chat",
                model="test-model", endpoint="chat", stream=False, status_code=200,
                input_tokens=3, output_tokens=4, cost="0.00000123")


def _rows(row, n, prefix="req"):
    return [{**row, "request_id": f"{prefix}_{i}", "input_tokens": i} for i in range(n)]


def _database_down(monkeypatch):
    def refuse(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "usage_records_create", refuse)


def test_rows_the_database_refuses_are_kept_in_redis_and_written_once_in_order(
        spool, row, monkeypatch):
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL): the spool's list is in Redis")
    original = services.usage_records_create
    _database_down(monkeypatch)
    calls._write_or_spool(_rows(row, 3))
    calls._write_or_spool(_rows(row, 5)[3:])
    assert usage_spool.depth() == {"redis": 5, "file": 0}
    assert UsageRecord.objects.count() == 0
    monkeypatch.setattr(services, "usage_records_create", original)
    # The client of Redis "crashed" after writing but before trimming: the rows come again.
    assert usage_spool._drain_redis() == 5
    usage_spool._client().rpush(usage_spool.REDIS_KEY, usage_spool._line(_rows(row, 1)[0]))
    usage_spool.drain()
    assert usage_spool.depth() == {"redis": 0, "file": 0}
    stored = list(UsageRecord.objects.order_by("pk").values_list("request_id", "input_tokens"))
    assert stored == [(f"req_{i}", i) for i in range(5)]  # in order, each once


def test_with_redis_down_too_rows_are_kept_in_a_file_and_written_once(spool, row,
                                                                       monkeypatch):
    original = services.usage_records_create
    _database_down(monkeypatch)
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens
    calls._write_or_spool(_rows(row, 4))
    assert (spool / "spool.jsonl").read_text().count("\n") == 4
    assert usage_spool.depth()["file"] == 4
    monkeypatch.setattr(services, "usage_records_create", original)
    before = time.time()
    assert usage_spool.drain() == 4
    assert not list(spool.glob("*.jsonl"))
    assert usage_spool.depth() == {"redis": None, "file": 0}
    records = list(UsageRecord.objects.order_by("pk"))
    assert [r.request_id for r in records] == [f"req_{i}" for i in range(4)]
    assert all(r.created_at.timestamp() <= before for r in records)  # the call's time
    assert str(records[0].cost) == "0.00000123"


def test_a_drain_while_the_database_is_still_down_keeps_every_row(spool, row, monkeypatch):
    _database_down(monkeypatch)
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:9/0")
    calls._write_or_spool(_rows(row, 2))
    with pytest.raises(OperationalError):
        usage_spool.drain()
    assert usage_spool.depth()["file"] == 2


def test_a_row_the_database_refuses_for_its_content_does_not_block_the_others(spool, row,
                                                                               monkeypatch):
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:9/0")
    good = _rows(row, 2)
    bad = {**row, "request_id": "req_bad", "status_code": 10 ** 9}  # out of the column's range
    usage_spool._append(spool / "spool.jsonl", [usage_spool._line(r) for r in
                                                [good[0], bad, good[1]]])
    usage_spool.drain()
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == [
        "req_0", "req_1"]
    assert "req_bad" in (spool / "dead.jsonl").read_text()
    assert usage_spool.depth()["file"] == 0


def test_budgets_count_a_spooled_call_and_reconcile_waits_for_its_row(spool, row,
                                                                      monkeypatch):
    from asgiref.sync import async_to_sync

    from workspaces import budgets
    from workspaces.models import Workspace
    from workspaces.resolution import resolve
    from workspaces.tasks import budget_reconcile_task

    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL): budget counters live in the shared cache")
    ws_id = row["workspace_id"]
    budget = budgets.budget_create(scope="workspace", workspace=Workspace.objects.get(pk=ws_id),
                                    limit=1000, metric="tokens")
    original = services.usage_records_create
    _database_down(monkeypatch)
    resolved = resolve(workspace_id=ws_id, role="chat")
    plan = calls.Plan(workspace_id=ws_id, api_key_id=None, endpoint="chat",
                      candidates=(resolved,))
    async_to_sync(calls.record)(plan, calls.Attempt(resolved, 1, time.perf_counter()),
                                stream=False, status=200, input_tokens=30, output_tokens=12)
    state = budgets.budgets_for(workspace_id=ws_id, connection_ids=[])[0]
    assert state.id == budget.pk
    assert budgets.read([state], [])[0][state.id] == 42  # counted while the row is spooled
    assert budget_reconcile_task() == 0  # database still down: counters left as they are
    assert budgets.read([state], [])[0][state.id] == 42
    monkeypatch.setattr(services, "usage_records_create", original)
    budget_reconcile_task()  # writes the spooled row first, then reconciles from the rows
    assert UsageRecord.objects.get().request_id == plan.request_id
    assert budgets.read([state], [])[0][state.id] == 42


def test_unlike_usage_a_credential_change_whose_audit_row_cannot_be_written_fails_whole(
        upstream, make_connection, monkeypatch):
    """Audit events are not spooled: the change and its event commit together or not at all."""
    from connections import services as connection_services
    from connections.models import Connection

    conn = make_connection(upstream, name="audited", key="sk-old-0000")

    def audit_down(**kwargs):
        raise OperationalError("audit table unreachable")

    monkeypatch.setattr(connection_services, "audit_record", audit_down)
    with pytest.raises(OperationalError):
        connection_services.connection_update(connection=Connection.objects.get(pk=conn.pk),
                                              credentials={"api_key": "sk-new-1111"})
    assert Connection.objects.get(pk=conn.pk).secrets["api_key"] == "sk-old-0000"


def test_a_usage_connection_that_broke_is_replaced_on_the_next_write(spool, row):
    """As after a PostgreSQL restart: the first write fails on the dead connection and is
    spooled; the next one opens a fresh connection and is written (no run of failures)."""
    from django.db import connections

    usage = connections["usage"]
    services.usage_records_create(rows=_rows(row, 1, prefix="warm"))  # the connection is open
    usage.connection.close()  # its socket is gone
    assert calls._write_or_spool(_rows(row, 1, prefix="during")) is False
    assert usage.connection is None
    assert calls._write_or_spool(_rows(row, 1, prefix="after")) is True
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"warm_0", "after_0"}
    usage_spool.drain()
    assert UsageRecord.objects.count() == 3
