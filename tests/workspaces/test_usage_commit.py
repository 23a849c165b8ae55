"""Usage rows as the gateway writes them (outside any transaction, on PostgreSQL): one
statement, committed (visible to other connections) when the call returns, not waiting for the
disk, and nothing of it left behind on the connection."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from workspaces import services
from workspaces.models import UsageRecord

from .conftest import _database_url, _require_postgres

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def row(upstream, make_connection, make_workspace):
    _require_postgres()
    conn = make_connection(upstream, name="primary")
    ws = make_workspace("Alpha", chat=conn)
    return dict(workspace_id=ws.pk, connection_id=str(conn.pk), api_key_id=None, role="chat",
                model="test-model", endpoint="chat", stream=False, status_code=200,
                input_tokens=3, output_tokens=4)


def _committed_count() -> int:
    with psycopg.connect(_database_url().replace("postgres://", "postgresql://"),
                         autocommit=True) as other:
        return other.execute("SELECT count(*) FROM workspaces_usagerecord").fetchone()[0]


def test_a_batch_is_one_statement_committed_when_it_returns(row):
    assert not db_connection.in_atomic_block
    with CaptureQueriesContext(db_connection) as queries:
        records = services.usage_records_create(rows=[row, {**row, "input_tokens": 9}])
    assert len(queries) == 1  # one round trip: SET LOCAL + INSERT in one query string
    assert "synchronous_commit" in queries[0]["sql"]
    assert _committed_count() == 2  # another connection sees both rows at once
    stored = {r.pk: r.input_tokens for r in UsageRecord.objects.all()}
    assert stored == {records[0].pk: 3, records[1].pk: 9}
    info = db_connection.connection.info
    assert info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db_connection.cursor() as cursor:  # SET LOCAL ended with its implicit transaction
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_a_row_whose_workspace_is_gone_is_kept_without_it_and_the_others_too(row):
    gone = {**row, "workspace_id": row["workspace_id"] + 10_000, "workspace_name": "Gone"}
    results = services.usage_records_create(rows=[row, gone, row])
    assert None not in results
    assert _committed_count() == 3
    assert services.usage_record_create(**gone) is not None
    info = db_connection.connection.info
    assert info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # no aborted block
    kept = UsageRecord.objects.filter(workspace__isnull=True)
    assert kept.count() == 2 and {r.workspace_name for r in kept} == {"Gone"}


def test_with_server_side_binding_the_statements_go_one_by_one(row, monkeypatch):
    """A deployment with OPTIONS server_side_binding cannot send several statements in one
    string: its rows are still written, in a transaction of their own."""
    options = {**db_connection.settings_dict.get("OPTIONS", {}), "server_side_binding": True}
    monkeypatch.setitem(db_connection.settings_dict, "OPTIONS", options)
    with CaptureQueriesContext(db_connection) as queries:
        records = services.usage_records_create(rows=[row, row])
    assert all(r is not None for r in records)
    assert not any(";" in q["sql"] for q in queries)  # one statement per query
    assert _committed_count() == 2
