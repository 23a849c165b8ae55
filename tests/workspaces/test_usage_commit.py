"""Usage rows as the gateway writes them: outside a transaction through the `usage` alias
(PostgreSQL sessions with synchronous_commit=off), one INSERT, committed (visible to other
connections) when the call returns; inside a caller's transaction on its connection, without
changing how that transaction commits; idempotent by request id on a replay."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection as db_connection
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from workspaces import services
from workspaces.models import UsageRecord

from .conftest import _database_url, _require_postgres


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


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_one_insert_on_the_async_commit_alias_committed_when_it_returns(row):
    usage = connections["usage"]
    with CaptureQueriesContext(usage) as queries, \
            CaptureQueriesContext(db_connection) as default_queries:
        services.usage_records_create(rows=[{**row, "request_id": "req_a"},
                                            {**row, "input_tokens": 9, "request_id": "req_b"}])
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1 and not default_queries.captured_queries
    assert _committed_count() == 2  # another connection sees both rows at once
    assert sorted(UsageRecord.objects.values_list("request_id", "input_tokens")) == [
        ("req_a", 3), ("req_b", 9)]
    with usage.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    with db_connection.cursor() as cursor:  # every other write keeps waiting for the disk
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_row_is_part_of_it_and_commits_synchronously(row):
    with transaction.atomic():
        services.usage_records_create(rows=[{**row, "request_id": "req_in_tx"}])
        assert _committed_count() == 0  # not committed on its own
        with db_connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    assert _committed_count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_workspace_is_gone_is_kept_without_it_and_the_others_too(row):
    gone = {**row, "workspace_id": row["workspace_id"] + 10_000, "workspace_name": "Gone"}
    results = services.usage_records_create(rows=[row, gone, row])
    assert None not in results
    assert _committed_count() == 3
    assert services.usage_record_create(**gone) is not None
    kept = UsageRecord.objects.filter(workspace__isnull=True)
    assert kept.count() == 2 and {r.workspace_name for r in kept} == {"Gone"}


@pytest.mark.django_db(transaction=True)
def test_a_replayed_row_counts_once_and_a_reused_client_request_id_still_counts(row):
    first = {**row, "request_id": "client-chosen-id"}
    services.usage_records_create(rows=[first])
    # The spool writes the same row again (its first write's answer was lost): counted once.
    services.usage_records_create(rows=[first, first], replay=True)
    assert UsageRecord.objects.count() == 1
    # A client that sends the same x-request-id with another call: a call of its own, counted.
    services.usage_records_create(rows=[{**first, "input_tokens": 50}])
    ids = sorted(UsageRecord.objects.values_list("request_id", "input_tokens"))
    assert len(ids) == 2 and ids[0] == ("client-chosen-id", 3)
    assert ids[1][0].startswith("client-chosen-id.") and ids[1][1] == 50
    # A second attempt (a fallback) of the same call is a row of its own.
    services.usage_records_create(rows=[{**first, "attempt": 2}], replay=True)
    assert UsageRecord.objects.count() == 3
