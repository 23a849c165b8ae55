"""Bulk paths for operators with many workspaces: workspace_bulk_create and move-bindings."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from connections.services import connection_move_bindings, connection_update
from llmconn.errors import Conflict, ValidationFailed
from tests.factories import ConnectionFactory
from workspaces.keys import authenticate_key
from workspaces.models import Workspace, WorkspaceAPIKey, WorkspaceBinding
from workspaces.resolution import current_revision, resolve
from workspaces.services import workspace_bulk_create, workspace_create


@pytest.fixture
def conn(db):
    return ConnectionFactory(name="bulk-conn", default_model="m1")


def _items(conn, n, start=0):
    return [{"name": f"Bulk {i}", "bindings": {"chat": {"connection": str(conn.pk)}},
             "api_keys": ["app"]} for i in range(start, start + n)]


def test_bulk_created_workspaces_resolve_and_their_keys_authenticate(conn):
    created = workspace_bulk_create(items=_items(conn, 3))
    assert [w.slug for w, _ in created] == ["bulk-0", "bulk-1", "bulk-2"]
    for workspace, (raw,) in created:
        identity = authenticate_key(raw, revision=current_revision())
        assert identity.workspace_id == workspace.pk
        assert resolve(workspace_id=workspace.pk, role="chat").connection_name == "bulk-conn"
    (event,) = AuditEvent.objects.filter(action="workspace.bulk_create")
    assert [w["slug"] for w in event.extra["workspaces"]] == ["bulk-0", "bulk-1", "bulk-2"]
    assert [len(w["api_keys"]) for w in event.extra["workspaces"]] == [1, 1, 1]
    assert not any(raw in str(e.extra) for e in AuditEvent.objects.all()
                   for _, (raw,) in created)


def test_bulk_create_costs_the_same_queries_for_10_or_100(conn):
    workspace_bulk_create(items=_items(conn, 1, 1000))  # (the audit chain's first row)
    counts = []
    for n, start in ((10, 0), (100, 10)):
        with CaptureQueriesContext(db_connection) as ctx:
            workspace_bulk_create(items=_items(conn, n, start))
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_bulk_create_is_all_or_nothing(conn):
    workspace_create(name="Bulk 1")
    with pytest.raises(Conflict):
        workspace_bulk_create(items=_items(conn, 3))
    assert Workspace.objects.count() == 1 and WorkspaceAPIKey.objects.count() == 0
    connection_update(connection=conn, is_active=False)
    with pytest.raises(ValidationFailed) as info:
        workspace_bulk_create(items=_items(conn, 2, start=5))
    assert "items[0].bindings.chat.connection" in info.value.message
    assert WorkspaceBinding.objects.count() == 0


def test_move_bindings_moves_every_binding_in_one_transaction(conn):
    target = ConnectionFactory(name="target", default_model="m2")
    created = workspace_bulk_create(items=_items(conn, 50))
    resolve(workspace_id=created[0][0].pk, role="chat")
    result = connection_move_bindings(source=conn, target=target)
    assert result["moved_bindings"] == 50
    assert resolve(workspace_id=created[0][0].pk, role="chat").connection_name == "target"
    assert not WorkspaceBinding.objects.filter(connection=conn).exists()


def test_import_workspaces_command_writes_the_keys_to_a_private_file(conn, tmp_path):
    import json
    import os
    import stat

    from django.core.management import call_command
    from django.core.management.base import CommandError

    source = tmp_path / "workspaces.json"
    source.write_text(json.dumps({"workspaces": [
        {"name": f"Imported {i}", "bindings": {"chat": {"connection": "bulk-conn"}},
         "api_keys": ["app", "ci"]} for i in range(3)]}))
    with pytest.raises(CommandError, match="--keys-out"):
        call_command("import_workspaces", str(source))
    out = tmp_path / "keys.json"
    call_command("import_workspaces", str(source), keys_out=str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    keys = json.loads(out.read_text())
    assert sorted(keys) == ["imported-0", "imported-1", "imported-2"]
    raw = keys["imported-1"][1]["key"]
    identity = authenticate_key(raw, revision=current_revision())
    assert identity.workspace_slug == "imported-1"
    assert resolve(workspace_id=identity.workspace_id, role="chat").connection_name == "bulk-conn"
    with pytest.raises(CommandError, match="exists"):  # never overwrites a keys file
        call_command("import_workspaces", str(source), keys_out=str(out))


@pytest.mark.parametrize("as_fallback", [False, True])
def test_bulk_create_refuses_a_chat_only_connection_on_the_embedding_role(conn, as_fallback):
    """The same rule as workspace_create and workspace_update: an embedding binding (or one of
    its fallbacks) needs a provider with an embeddings endpoint; nothing is created."""
    claude = ConnectionFactory(name="claude-only", provider="anthropic",
                               base_url="https://api.anthropic.com")
    binding = ({"connection": str(conn.pk), "fallbacks": [{"connection": str(claude.pk)}]}
               if as_fallback else {"connection": str(claude.pk)})
    items = [{"name": "Embeds", "bindings": {"embedding": binding}, "api_keys": ["app"]}]
    with pytest.raises(ValidationFailed) as refused:
        workspace_bulk_create(items=items)
    assert refused.value.code == "unsupported_endpoint"
    where = ("items[0].bindings.embedding.fallbacks[0].connection" if as_fallback
             else "items[0].bindings.embedding.connection")
    assert where in refused.value.message
    assert Workspace.objects.count() == 0 and WorkspaceBinding.objects.count() == 0
