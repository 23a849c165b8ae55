"""llmconn.prepared: a query compiled once returns what the ORM returns, for any values."""

from __future__ import annotations

import pytest

from llmconn.prepared import Prepared
from tests.factories import ConnectionFactory
from workspaces.models import WorkspaceBinding
from workspaces.services import workspace_create


def _query(workspace_id, role):
    return WorkspaceBinding.objects.filter(workspace_id=workspace_id, role=role).values_list(
        "workspace__slug", "fallbacks", "updated_at", "connection__config")


@pytest.mark.django_db
def test_rows_are_what_values_list_returns_for_each_value():
    conn = ConnectionFactory(name="p1", config={"x": 1})
    spare = ConnectionFactory(name="p2")
    one = workspace_create(name="One", bindings={"chat": {"connection": str(conn.pk)}})
    two = workspace_create(name="Two", bindings={"agent": {
        "connection": str(conn.pk), "fallbacks": [{"connection": str(spare.pk), "model": "m"}]}})
    prepared = Prepared(WorkspaceBinding, _query, workspace_id=-5, role="\x01role")
    for ws, role in ((one, "chat"), (two, "agent"), (two, "chat"), (one, "agent")):
        assert prepared.rows(workspace_id=ws.pk, role=role) == list(_query(ws.pk, role))
    assert prepared.rows(workspace_id=two.pk, role="agent")[0][1][0]["model"] == "m"


@pytest.mark.django_db
def test_a_sentinel_missing_from_the_query_is_refused():
    prepared = Prepared(WorkspaceBinding, lambda workspace_id, role: WorkspaceBinding.objects
                        .filter(workspace_id=workspace_id).values_list("id"),
                        workspace_id=-5, role="\x01role")
    with pytest.raises(ValueError):
        prepared.rows(workspace_id=1, role="chat")
