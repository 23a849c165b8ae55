"""The workspaces REST API: CRUD, bindings, permissions, API keys, members, system defaults."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tests.factories import ConnectionFactory
from workspaces.models import Membership, Workspace, WorkspaceAPIKey
from workspaces.services import membership_set, workspace_create

URL = "/api/v1/workspaces/"


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def conn(db):
    return ConnectionFactory(name="main", default_model="m-default")


@pytest.fixture
def other_conn(db):
    return ConnectionFactory(name="other", default_model="m-other")


@pytest.fixture
def users(db):
    User = get_user_model()
    return {
        "manager": User.objects.create_user("manager", password="pw-12345678"),
        "member": User.objects.create_user("member", password="pw-12345678"),
        "outsider": User.objects.create_user("outsider", password="pw-12345678"),
    }


@pytest.fixture
def ws(db, users):
    workspace = workspace_create(name="Team A", slug="team-a")
    membership_set(workspace=workspace, user=users["manager"], role="manager")
    membership_set(workspace=workspace, user=users["member"], role="member")
    return workspace


def test_staff_creates_workspace_with_bindings(staff_client, conn):
    response = staff_client.post(URL, {"name": "Research", "bindings": {
        "chat": {"connection": str(conn.pk), "model": "m-chat"}}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["slug"] == "research"
    assert body["bindings"]["chat"]["connection"] == str(conn.pk)
    assert body["bindings"]["chat"]["model"] == "m-chat"
    assert body["bindings"]["agent"] == {"connection": None, "connection_name": None,
                                         "provider": None, "model": None, "fallbacks": [],
                                         "default_params": {}}


def test_duplicate_workspace_name_is_a_400_or_409(staff_client, ws):
    response = staff_client.post(URL, {"name": "Team A"}, format="json")
    assert response.status_code in (400, 409)
    assert "error" in response.json()


@pytest.mark.parametrize("bad", [
    {"chat": {"connection": "not-a-uuid"}},
    {"chat": {"connection": "00000000-0000-0000-0000-000000000000"}},
    {"writer": {"connection": None}},
    {"chat": {"connection": None, "api_key": "x"}},
    {"chat": "gpt-4"},
    {"chat": {"model": 12}},
])
def test_bad_bindings_are_400_and_change_nothing(staff_client, ws, bad):
    response = staff_client.patch(f"{URL}team-a/", {"bindings": bad}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["message"]
    assert not ws.bindings.exists()


def test_binding_an_inactive_connection_is_a_400(staff_client, ws):
    inactive = ConnectionFactory(name="off", is_active=False)
    response = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "chat": {"connection": str(inactive.pk)}}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "inactive_connection"


def test_patch_changes_only_the_roles_sent(staff_client, ws, conn, other_conn):
    staff_client.patch(f"{URL}team-a/", {"bindings": {
        "chat": {"connection": str(conn.pk)}, "agent": {"connection": str(conn.pk)}}},
        format="json")
    response = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "agent": {"connection": str(other_conn.pk), "model": "big"}}}, format="json")
    assert response.status_code == 200
    bindings = response.json()["bindings"]
    assert bindings["chat"]["connection"] == str(conn.pk)
    assert bindings["agent"] == {"connection": str(other_conn.pk), "connection_name": "other",
                                 "provider": None, "model": "big", "fallbacks": [],
                                 "default_params": {}}
    response = staff_client.patch(f"{URL}team-a/", {"bindings": {"agent": None}}, format="json")
    assert response.json()["bindings"]["agent"]["connection"] is None


def test_fallbacks_are_stored_and_validated(staff_client, ws, conn, other_conn):
    response = staff_client.patch(f"{URL}team-a/", {"bindings": {"chat": {
        "connection": str(conn.pk),
        "fallbacks": [{"connection": str(other_conn.pk), "model": None}]}}}, format="json")
    assert response.status_code == 200
    assert response.json()["bindings"]["chat"]["fallbacks"] == [
        {"connection": str(other_conn.pk), "model": None}]
    response = staff_client.patch(f"{URL}team-a/", {"bindings": {"chat": {
        "fallbacks": [{"connection": "00000000-0000-0000-0000-000000000000"}]}}}, format="json")
    assert response.status_code == 400


def test_changing_the_embedding_model_warns_about_existing_vectors(staff_client, ws, conn,
                                                                   other_conn):
    first = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "embedding": {"connection": str(conn.pk), "model": "emb-1"}}}, format="json")
    assert first.json()["warnings"] == []  # nothing was embedded before
    same = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "chat": {"connection": str(conn.pk)}}}, format="json")
    assert same.json()["warnings"] == []
    changed = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "embedding": {"model": "emb-2"}}}, format="json")
    assert len(changed.json()["warnings"]) == 1
    assert "vectors" in changed.json()["warnings"][0]
    moved = staff_client.patch(f"{URL}team-a/", {"bindings": {
        "embedding": {"connection": str(other_conn.pk)}}}, format="json")
    assert "vectors" in moved.json()["warnings"][0]


def test_resolved_shows_provider_connection_and_model_without_secrets(staff_client, ws, conn):
    staff_client.patch(f"{URL}team-a/", {"bindings": {"chat": {"connection": str(conn.pk)}}},
                       format="json")
    response = staff_client.get(f"{URL}team-a/resolved/")
    assert response.status_code == 200
    roles = response.json()["roles"]
    assert roles["chat"]["provider"] == "openai_compatible"
    assert roles["chat"]["connection_name"] == "main"
    assert roles["chat"]["model"] == "m-default"
    assert roles["agent"]["error"]["code"] == "role_not_configured"
    assert conn.secrets["api_key"] not in response.content.decode()


def test_system_default_fills_unbound_roles(staff_client, ws, conn):
    response = staff_client.put("/api/v1/system-defaults/agent/",
                                {"connection": str(conn.pk), "model": "m-agent"}, format="json")
    assert response.status_code == 200, response.json()
    roles = staff_client.get(f"{URL}team-a/resolved/").json()["roles"]
    assert roles["agent"]["source"] == "system_default"
    assert roles["agent"]["model"] == "m-agent"
    listing = staff_client.get("/api/v1/system-defaults/").json()
    assert listing["agent"]["connection_name"] == "main"
    assert listing["chat"] is None
    assert staff_client.delete("/api/v1/system-defaults/agent/").status_code == 204
    roles = staff_client.get(f"{URL}team-a/resolved/").json()["roles"]
    assert "error" in roles["agent"]


def test_only_staff_set_system_defaults(users, conn):
    client = _client(users["manager"])
    response = client.put("/api/v1/system-defaults/chat/", {"connection": str(conn.pk)},
                          format="json")
    assert response.status_code == 403
    assert client.get("/api/v1/system-defaults/").status_code == 200


def test_system_default_with_unknown_role_or_inactive_connection(staff_client, conn):
    assert staff_client.put("/api/v1/system-defaults/writer/",
                            {"connection": str(conn.pk)}, format="json").status_code == 404
    inactive = ConnectionFactory(name="off", is_active=False)
    assert staff_client.put("/api/v1/system-defaults/chat/",
                            {"connection": str(inactive.pk)}, format="json").status_code == 400


# --- permissions ------------------------------------------------------------------------------

def test_lists_show_only_the_callers_workspaces(users, ws):
    workspace_create(name="Team B", slug="team-b")
    assert [w["slug"] for w in _client(users["member"]).get(URL).json()["results"]] == ["team-a"]
    assert _client(users["outsider"]).get(URL).json()["results"] == []


def test_anonymous_gets_401_or_403(api_client, ws):
    assert api_client.get(URL).status_code in (401, 403)


def test_outsider_cannot_see_a_workspace(users, ws):
    client = _client(users["outsider"])
    assert client.get(f"{URL}team-a/").status_code == 404
    assert client.get(f"{URL}team-a/resolved/").status_code == 404
    assert client.post(f"{URL}team-a/api-keys/", {}, format="json").status_code == 404
    assert client.patch(f"{URL}team-a/", {"bindings": {}}, format="json").status_code == 404


def test_member_reads_but_cannot_change_bindings_or_keys(users, ws, conn):
    client = _client(users["member"])
    assert client.get(f"{URL}team-a/").status_code == 200
    assert client.get(f"{URL}team-a/resolved/").status_code == 200
    assert client.patch(f"{URL}team-a/", {"bindings": {"chat": {"connection": str(conn.pk)}}},
                        format="json").status_code == 403
    assert client.post(f"{URL}team-a/api-keys/", {}, format="json").status_code == 403
    assert client.get(f"{URL}team-a/api-keys/").status_code == 403


def test_manager_changes_bindings_and_keys_but_not_the_workspace_itself(users, ws, conn):
    client = _client(users["manager"])
    response = client.patch(f"{URL}team-a/", {"bindings": {"chat": {"connection": str(conn.pk)}}},
                            format="json")
    assert response.status_code == 200
    assert client.patch(f"{URL}team-a/", {"name": "Renamed"}, format="json").status_code == 403
    assert client.delete(f"{URL}team-a/").status_code == 403
    assert client.post(URL, {"name": "Mine"}, format="json").status_code == 403
    assert client.post(f"{URL}team-a/members/", {"user": "outsider"},
                       format="json").status_code == 403
    assert client.post(f"{URL}team-a/api-keys/", {"name": "ci"}, format="json").status_code == 201


def test_member_of_a_cannot_touch_workspace_b(users, ws):
    workspace_create(name="Team B", slug="team-b")
    client = _client(users["manager"])  # manager of A
    assert client.get(f"{URL}team-b/").status_code == 404
    assert client.post(f"{URL}team-b/api-keys/", {}, format="json").status_code == 404
    assert not WorkspaceAPIKey.objects.filter(workspace__slug="team-b").exists()


def test_staff_manage_members(staff_client, ws, users):
    response = staff_client.post(f"{URL}team-a/members/", {"user": "outsider",
                                                            "role": "manager"}, format="json")
    assert response.status_code == 201
    member_id = response.json()["id"]
    assert Membership.objects.get(pk=member_id).role == "manager"
    response = staff_client.patch(f"{URL}team-a/members/{member_id}/", {"role": "member"},
                                  format="json")
    assert response.json()["role"] == "member"
    assert staff_client.delete(f"{URL}team-a/members/{member_id}/").status_code == 204
    assert staff_client.post(f"{URL}team-a/members/", {"user": "nobody"},
                             format="json").status_code == 400


def test_staff_delete_workspace(staff_client, ws):
    assert staff_client.delete(f"{URL}team-a/").status_code == 204
    assert not Workspace.objects.filter(slug="team-a").exists()


# --- API keys ---------------------------------------------------------------------------------

def test_api_key_is_shown_once_and_stored_hashed(staff_client, ws):
    response = staff_client.post(f"{URL}team-a/api-keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    key = response.json()["key"]
    assert key.startswith("lck_") and len(key) >= 4 + 32
    row = WorkspaceAPIKey.objects.get(pk=response.json()["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(row.__dict__.values())
    listing = staff_client.get(f"{URL}team-a/api-keys/")
    assert key not in listing.content.decode()
    assert listing.json()[0]["prefix"] == key[:12]
    assert "key" not in listing.json()[0]


def test_revoking_a_key(staff_client, ws):
    key_id = staff_client.post(f"{URL}team-a/api-keys/", {}, format="json").json()["id"]
    assert staff_client.delete(f"{URL}team-a/api-keys/{key_id}/").status_code == 204
    assert WorkspaceAPIKey.objects.get(pk=key_id).revoked_at is not None
    assert staff_client.get(f"{URL}team-a/api-keys/").json()[0]["is_active"] is False
    assert staff_client.delete(f"{URL}team-a/api-keys/999999/").status_code == 404


def test_deleting_a_bound_connection_is_refused(staff_client, ws, conn):
    from connections.services import connection_delete
    from llmconn.errors import Conflict

    staff_client.patch(f"{URL}team-a/", {"bindings": {"chat": {"connection": str(conn.pk)}}},
                       format="json")
    with pytest.raises(Conflict):
        connection_delete(connection=conn)


def test_changes_are_audited_without_the_raw_key(staff_client, ws, conn):
    from audit.models import AuditEvent

    staff_client.patch(f"{URL}team-a/", {"bindings": {"chat": {"connection": str(conn.pk)}}},
                       format="json")
    created = staff_client.post(f"{URL}team-a/api-keys/", {"name": "ci"}, format="json").json()
    staff_client.delete(f"{URL}team-a/api-keys/{created['id']}/")
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert {"workspace.update", "workspace.api_key_create",
            "workspace.api_key_revoke"} <= set(actions)
    dump = str(list(AuditEvent.objects.values()))
    assert created["key"] not in dump and created["key"][12:] not in dump


def test_admin_pages_render_without_key_material(staff_user, ws, conn):
    from django.test import Client

    created = _client(staff_user).post(f"{URL}team-a/api-keys/", {}, format="json").json()
    client = Client()
    client.force_login(staff_user)
    key = WorkspaceAPIKey.objects.get(pk=created["id"])
    for url in ("/admin/workspaces/workspace/", f"/admin/workspaces/workspace/{ws.pk}/change/",
                "/admin/workspaces/workspaceapikey/",
                f"/admin/workspaces/workspaceapikey/{key.pk}/change/",
                "/admin/workspaces/usagerecord/", "/admin/workspaces/systemdefault/"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert created["key"] not in response.content.decode()
        assert key.key_hash not in response.content.decode()
