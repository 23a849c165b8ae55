"""Workspace services: API keys, usage records, the revision stamp."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test.utils import CaptureQueriesContext
from django.db import connection as db_connection

from connections.services import connection_delete, connection_update
from llmconn import versions
from tests.factories import ConnectionFactory
from workspaces.models import UsageRecord, WorkspaceAPIKey
from workspaces.services import (
    api_key_create,
    api_key_touch_flush,
    api_key_touch_later,
    usage_record_create,
    workspace_create,
)

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def ws(db):
    return workspace_create(name="W")


def test_api_keys_are_long_random_and_distinct(ws):
    keys = {api_key_create(workspace=ws)[1] for _ in range(20)}
    assert len(keys) == 20
    assert all(k.startswith("lck_") and len(k) >= 36 for k in keys)


def test_last_used_is_written_at_most_once_a_minute(ws, django_assert_num_queries):
    key, _ = api_key_create(workspace=ws)
    with django_assert_num_queries(0):  # queued for the flush: no query on the call itself
        assert api_key_touch_later(api_key_id=key.pk)
    with django_assert_num_queries(1):
        assert api_key_touch_flush() == 1
    with django_assert_num_queries(0):
        for _ in range(5):
            assert not api_key_touch_later(api_key_id=key.pk)
        assert api_key_touch_flush() == 0
    assert WorkspaceAPIKey.objects.get(pk=key.pk).last_used_at is not None


def test_usage_record_survives_a_deleted_connection(ws):
    conn = ConnectionFactory()
    conn_id = str(conn.pk)
    connection_delete(connection=conn)
    record = usage_record_create(workspace_id=ws.pk, connection_id=conn_id, api_key_id=None,
                                 role="chat", model="m", endpoint="chat", stream=False,
                                 status_code=200, input_tokens=3, output_tokens=4)
    assert UsageRecord.objects.get(pk=record.pk).connection_id is None


def test_connection_changes_bump_that_connection_only(db):
    """A connection edit moves its own version (and the connection epoch), not the global stamp
    every cached resolution depends on, nor another connection's."""
    conn, other = ConnectionFactory(), ConnectionFactory()
    scopes = [versions.GLOBAL, versions.connection(conn.pk), versions.connection(other.pk)]
    before = dict(zip(scopes, versions.read(scopes)))
    connection_update(connection=conn, default_model="x")
    after = dict(zip(scopes, versions.read(scopes)))
    assert after[versions.connection(conn.pk)] > before[versions.connection(conn.pk)]
    assert after[versions.GLOBAL] == before[versions.GLOBAL]
    assert after[versions.connection(other.pk)] == before[versions.connection(other.pk)]
    versions.bump_connections(other.pk)
    assert versions.read(scopes[2:])[0] > after[versions.connection(other.pk)]
    assert cache.get(versions.GLOBAL) == after[versions.GLOBAL]


@pytest.mark.django_db(transaction=True)  # as in production: no transaction around the call
def test_a_warm_gateway_call_reads_nothing_from_the_database(gateway, upstream,
                                                             make_connection, make_workspace,
                                                             make_key):
    from django.db import connections

    key = make_key(make_workspace("Warm", chat=make_connection(upstream)))
    assert gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    usage = connections["usage" if "usage" in connections.databases else "default"]
    with CaptureQueriesContext(db_connection) as captured, \
            CaptureQueriesContext(usage) as usage_captured:
        response = gateway.post("/v1/chat/completions", key, {"model": "chat",
                                                              "messages": HELLO})
    assert response.status_code == 200
    queries = captured.captured_queries + (
        usage_captured.captured_queries if usage.alias != "default" else [])
    statements = [q["sql"].split()[0].upper() for q in queries]
    assert "SELECT" not in statements, queries
    assert statements.count("INSERT") == 1  # the usage record
    assert UsageRecord.objects.count() == 2


def test_cost_is_recorded_when_litellm_knows_the_price(gateway, upstream, make_connection,
                                                       make_workspace, make_key):
    conn = make_connection(upstream, default_model="gpt-4o-mini")
    key = make_key(make_workspace("Priced", chat=conn,
                                  agent=(make_connection(upstream), "test-model")))
    gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    gateway.post("/v1/chat/completions", key, {"model": "agent", "messages": HELLO})
    priced, unknown = (UsageRecord.objects.get(role="chat"), UsageRecord.objects.get(role="agent"))
    assert priced.cost is not None and priced.cost > 0
    assert unknown.cost is None


def test_usage_of_a_call_whose_workspace_was_deleted_meanwhile_is_kept_with_its_name(ws):
    from workspaces.services import workspace_delete

    workspace_id = ws.pk
    workspace_delete(workspace=ws)
    record = usage_record_create(workspace_id=workspace_id, connection_id=None,
                                 api_key_id=None, role="chat", model="m", endpoint="chat",
                                 stream=False, status_code=200, workspace_name="Gone")
    stored = UsageRecord.objects.get(pk=record.pk)
    assert stored.workspace_id is None and stored.workspace_name == "Gone"
