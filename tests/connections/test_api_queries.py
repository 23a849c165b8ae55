"""Listing connections costs a constant number of queries, whatever the number of rows,
counts and tests (no N+1)."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connections.api.serializers import ConnectionSerializer
from connections.models import Connection, ConnectionTest, DiscoveredModel
from connections.selectors import connection_list_detailed
from tests.factories import ConnectionFactory
from workspaces.models import Workspace, WorkspaceBinding

from .api_support import (  # noqa: F401  (fixtures)
    LIST_URL,
    manager_client,
    manager_user,
)

pytestmark = pytest.mark.django_db

# count (pagination) + rows with counts + newest tests; one more for a manager's membership.
MAX_QUERIES = 4


def populate(n: int, workspaces: int = 50) -> list[Connection]:
    """n connections, each with discovered models and tests; some bound to workspaces."""
    start = Workspace.objects.count()
    conns = Connection.objects.bulk_create(ConnectionFactory.build_batch(n))
    now = timezone.now()
    DiscoveredModel.objects.bulk_create([
        DiscoveredModel(connection=c, model_id=f"model-{k}", discovered_at=now)
        for c in conns for k in range(2)])
    ConnectionTest.objects.bulk_create([
        ConnectionTest(connection=c, kind=kind, provider=c.provider, auth_method=c.auth_method,
                       status="succeeded", latency_ms=k)
        for c in conns for k, kind in enumerate(["test", "test", "discover"])])
    workspaces = Workspace.objects.bulk_create(
        [Workspace(name=f"w{i}", slug=f"w{i}") for i in range(start, start + workspaces)])
    WorkspaceBinding.objects.bulk_create([
        WorkspaceBinding(workspace=w, role=role, connection=conns[(i * 3 + j) % n])
        for i, w in enumerate(workspaces) for j, role in enumerate(["chat", "agent", "embedding"])])
    return conns


def test_serializing_1000_connections_takes_two_queries():
    populate(1000)
    with CaptureQueriesContext(db_connection) as ctx:
        rows = ConnectionSerializer(connection_list_detailed(), many=True).data
    assert len(rows) == 1000
    assert len(ctx.captured_queries) == 2  # rows with counts, newest tests
    assert all(r["models_count"] == 2 and r["last_test"] is not None for r in rows)
    assert sum(r["used_by_count"] for r in rows) == 150


def test_listing_pages_of_1000_connections_costs_a_constant_number_of_queries(
        staff_client, django_assert_max_num_queries):
    populate(1000)
    for page in (1, 2):
        with django_assert_max_num_queries(MAX_QUERIES):
            response = staff_client.get(LIST_URL, {"page_size": 500, "page": page})
        assert response.status_code == 200
        assert len(response.json()["results"]) == 500
    with django_assert_max_num_queries(MAX_QUERIES):
        response = staff_client.get(LIST_URL, {"page_size": 10, "search": "conn",
                                               "provider": "openai_compatible"})
    assert response.json()["count"] == 1000


def test_query_count_does_not_grow_with_rows(staff_client):
    populate(5)

    def count() -> int:
        with CaptureQueriesContext(db_connection) as ctx:
            assert staff_client.get(LIST_URL, {"page_size": 500}).status_code == 200
        return len(ctx.captured_queries)

    small = count()
    populate(300)
    assert count() == small


def test_manager_listing_is_constant_too(manager_client, django_assert_max_num_queries):
    populate(600)
    with django_assert_max_num_queries(MAX_QUERIES + 1):
        response = manager_client.get(LIST_URL, {"page_size": 500})
    assert len(response.json()["results"]) == 500


def test_counts_are_exact_for_a_busy_connection():
    c = populate(1, workspaces=4)[0]
    row = connection_list_detailed().get(pk=c.pk)
    assert row.models_count == 2
    assert row.used_by_count == 12  # the one connection holds every binding
    assert len(row.latest_tests) == 1 and row.latest_tests[0].kind == "test"
