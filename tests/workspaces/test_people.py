"""People and defaults: personal connections, the caller's defaults and personal keys,
provider-string bindings, default params (README "People and defaults")."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.test import APIClient

from connections.models import Connection
from connections.services import connection_set_default, connection_update
from tests.conftest import UPSTREAM_KEY
from workspaces import services
from workspaces.models import UsageRecord, UserDefault, WorkspaceAPIKey

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Hello"}]
OWNER_KEY = "sk-owner-secret-key-7q3wZK9x"  # the owner's personal provider key


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def people(db):
    User = get_user_model()
    return {
        "alice": User.objects.create_user("alice", password="pw-alice-12345"),
        "bob": User.objects.create_user("bob", password="pw-bob-123456"),
        "staff": User.objects.create_user("boss", password="pw-boss-123456", is_staff=True,
                                          is_superuser=True),
    }


@pytest.fixture
def alices(people, upstream):
    """Alice's personal connection to the fake upstream, created through the API."""
    upstream.api_keys.add(OWNER_KEY)
    r = _client(people["alice"]).post("/api/v1/connections/", {
        "name": "alice-own", "provider": "openai_compatible", "auth_method": "api_key",
        "base_url": upstream.openai_url, "default_model": "test-model",
        "config": {}, "credentials": {"api_key": OWNER_KEY}}, format="json")
    assert r.status_code == 201, r.content
    return Connection.objects.get(pk=r.json()["id"])


# --- personal connections ---------------------------------------------------------------------

def test_a_user_creates_a_personal_connection_and_sees_it_in_full(people, alices):
    assert alices.owner == people["alice"]
    body = _client(people["alice"]).get(f"/api/v1/connections/{alices.pk}/").json()
    assert body["owner"] == people["alice"].pk
    assert body["credentials"]["api_key"] == {"set": True, "hint": "…ZK9x"}
    assert "config" in body


def test_no_other_user_sees_or_finds_a_personal_connection(people, alices):
    bob = _client(people["bob"])
    listed = bob.get("/api/v1/connections/").json()
    assert all(row["id"] != str(alices.pk) for row in listed["results"])
    for path in ("", "models/", "dependents/"):
        assert bob.get(f"/api/v1/connections/{alices.pk}/{path}").status_code == 404
    for path in ("test/", "discover-models/", "rotate-secret/", "rollback-secret/"):
        assert bob.post(f"/api/v1/connections/{alices.pk}/{path}", {}, format="json"
                        ).status_code == 404, path
    assert bob.patch(f"/api/v1/connections/{alices.pk}/", {"name": "x"},
                     format="json").status_code == 404
    # Not through an unsaved test that names it either (its stored secret stays unused).
    assert bob.post("/api/v1/connection-tests/", {"connection": str(alices.pk)},
                    format="json").status_code == 404


def test_staff_see_metadata_only_and_may_only_deactivate(people, alices):
    staff = _client(people["staff"])
    for response in (staff.get(f"/api/v1/connections/{alices.pk}/"),
                     staff.get("/api/v1/connections/")):
        raw = response.content.decode()
        assert response.status_code == 200
        assert "ZK9x" not in raw and OWNER_KEY not in raw
    body = staff.get(f"/api/v1/connections/{alices.pk}/").json()
    assert "credentials" not in body and "config" not in body and body["owner"]
    assert staff.patch(f"/api/v1/connections/{alices.pk}/", {"default_model": "x"},
                       format="json").status_code == 403
    assert staff.patch(f"/api/v1/connections/{alices.pk}/", {"is_active": False, "name": "y"},
                       format="json").status_code == 403
    assert staff.delete(f"/api/v1/connections/{alices.pk}/").status_code == 403
    assert staff.post(f"/api/v1/connections/{alices.pk}/test/", {},
                      format="json").status_code == 403
    r = staff.patch(f"/api/v1/connections/{alices.pk}/", {"is_active": False}, format="json")
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert "credentials" not in r.json()


def test_personal_connections_cannot_be_bound_or_be_defaults(people, alices, make_workspace):
    staff = _client(people["staff"])
    r = staff.post("/api/v1/workspaces/", {"name": "W", "bindings": {
        "chat": {"connection": str(alices.pk)}}}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "personal_connection"
    ws = make_workspace("Other")
    r = staff.patch(f"/api/v1/workspaces/{ws.slug}/", {"bindings": {"chat": {
        "connection": None, "fallbacks": [{"connection": str(alices.pk)}]}}}, format="json")
    assert r.status_code == 400
    r = staff.put("/api/v1/system-defaults/chat/", {"connection": str(alices.pk)},
                  format="json")
    assert r.status_code == 400
    r = _client(people["alice"]).post(f"/api/v1/connections/{alices.pk}/set-default/")
    assert r.status_code == 403
    assert not Connection.objects.get(pk=alices.pk).is_default


def test_personal_names_are_per_owner(people, alices, upstream):
    body = {"name": "alice-own", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "credentials": {"api_key": "sk-bob-key-00000001"}}
    assert _client(people["bob"]).post("/api/v1/connections/", body,
                                       format="json").status_code == 201
    r = _client(people["alice"]).post("/api/v1/connections/", body, format="json")
    assert r.status_code == 400


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)
def test_the_feature_switched_off_answers_403(people, alices):
    alice = _client(people["alice"])
    r = alice.post("/api/v1/connections/", {"name": "n", "provider": "openai",
                                             "credentials": {"api_key": "sk-" + "n" * 20}},
                   format="json")
    assert r.status_code == 403
    assert alice.get("/api/v1/connections/").status_code == 403
    assert alice.post(f"/api/v1/connections/{alices.pk}/test/", {},
                      format="json").status_code == 403
    r = alice.put("/api/v1/me/defaults/chat/", {"connection": str(alices.pk)}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "personal_connections_disabled"


# --- the caller's defaults and personal keys --------------------------------------------------

def test_a_personal_key_uses_the_users_default_then_the_system_default(
        people, alices, upstream_factory, make_connection, gateway):
    shared_up = upstream_factory(name="shared", api_keys={UPSTREAM_KEY})
    shared = make_connection(shared_up, name="shared")
    services.system_default_set(role="chat", connection=shared)
    alice = _client(people["alice"])
    raw = alice.post("/api/v1/me/api-keys/", {"name": "laptop"}, format="json").json()["key"]
    assert raw.startswith("lck_")

    r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r.status_code == 200 and r["x-llmconn-connection"] == "shared"

    r = alice.put("/api/v1/me/defaults/chat/", {"connection": str(alices.pk)}, format="json")
    assert r.status_code == 200 and r.json()["resolved"]["source"] == "user_default"
    r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r.status_code == 200 and r["x-llmconn-connection"] == "alice-own"
    assert alices_upstream_key(alices) == OWNER_KEY

    assert alice.delete("/api/v1/me/defaults/chat/").status_code == 204
    r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r["x-llmconn-connection"] == "shared"
    row = UsageRecord.objects.filter(status_code=200).order_by("-id").first()
    assert row.workspace_id is None and row.user_id == people["alice"].pk
    assert row.api_key.user_id == people["alice"].pk


def alices_upstream_key(conn) -> str:
    return conn.secrets["api_key"]


def test_a_personal_key_never_reaches_a_workspaces_bindings(
        people, upstream_factory, make_connection, make_workspace, gateway):
    team_up = upstream_factory(name="team", api_keys={UPSTREAM_KEY})
    team_up.models = ["team-only-model", "test-model"]
    team = make_connection(team_up, name="team", default_model="team-only-model")
    ws = make_workspace("Team", chat=team)
    services.membership_set(workspace=ws, user=people["alice"], role="manager")
    _, raw = services.personal_api_key_create(user=people["alice"])
    r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r.status_code == 503 and r.json()["error"]["code"] == "role_not_configured"
    r = gateway.post("/v1/chat/completions", raw, {"model": "team-only-model",
                                                   "messages": HELLO})
    assert r.status_code == 404
    assert gateway.get("/v1/models", raw).json()["data"] == []
    assert team_up.request_count == 0


def test_another_users_personal_connection_cannot_be_a_default(people, alices):
    r = _client(people["bob"]).put("/api/v1/me/defaults/chat/", {"connection": str(alices.pk)},
                                   format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_connection"
    assert "alice-own" not in r.content.decode()
    assert not UserDefault.objects.exists()


def test_a_revoked_personal_key_is_refused_and_others_keys_are_404(people, gateway, alices):
    key, raw = services.personal_api_key_create(user=people["alice"])
    UserDefault.objects.create(user=people["alice"], role="chat", connection=alices)
    assert gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    assert _client(people["bob"]).delete(f"/api/v1/me/api-keys/{key.pk}/").status_code == 404
    assert _client(people["alice"]).delete(f"/api/v1/me/api-keys/{key.pk}/").status_code == 204
    r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r.status_code == 401


# --- provider-string bindings -----------------------------------------------------------------

def test_a_provider_binding_follows_set_default_and_protects_the_default(
        people, upstream_factory, make_connection, make_workspace, make_key, gateway):
    up = upstream_factory(name="p", api_keys={UPSTREAM_KEY})
    first = make_connection(up, name="first")
    second = make_connection(up, name="second")
    connection_set_default(connection=first)
    ws = make_workspace("Legacy")
    staff = _client(people["staff"])
    r = staff.patch(f"/api/v1/workspaces/{ws.slug}/", {"bindings": {"chat": {
        "provider": "openai_compatible"}}}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["bindings"]["chat"]["provider"] == "openai_compatible"
    key = make_key(ws)
    r = gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    assert r.status_code == 200 and r["x-llmconn-connection"] == "first"
    resolved = staff.get(f"/api/v1/workspaces/{ws.slug}/resolved/").json()["roles"]["chat"]
    assert resolved["source"] == "provider_default" and resolved["connection_name"] == "first"

    r = staff.delete(f"/api/v1/connections/{first.pk}/")
    assert r.status_code == 409 and r.json()["error"]["bindings"][0]["workspace"] == ws.slug

    assert staff.post(f"/api/v1/connections/{second.pk}/set-default/").status_code == 200
    r = gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    assert r["x-llmconn-connection"] == "second"
    assert staff.delete(f"/api/v1/connections/{first.pk}/").status_code == 204


def test_a_provider_binding_without_a_default_says_so(people, make_workspace, make_key,
                                                      gateway):
    ws = make_workspace("NoDefault")
    services.workspace_update(workspace=ws, bindings={"chat": {"provider": "openai"}})
    r = gateway.post("/v1/chat/completions", make_key(ws), {"model": "chat",
                                                            "messages": HELLO})
    assert r.status_code == 503 and r.json()["error"]["code"] == "provider_default_missing"
    r = _client(people["staff"]).patch(f"/api/v1/workspaces/{ws.slug}/", {"bindings": {
        "chat": {"provider": "no-such-provider"}}}, format="json")
    assert r.status_code == 400


# --- default params ---------------------------------------------------------------------------

def test_default_params_merge_connection_binding_request(people, upstream, make_connection,
                                                         make_workspace, make_key, gateway):
    conn = make_connection(upstream, name="tuned",
                           default_params={"temperature": 0.1, "max_tokens": 50, "seed": 7})
    ws = make_workspace("Tuned", chat=conn)
    services.workspace_update(workspace=ws, bindings={"chat": {
        "default_params": {"max_tokens": 20, "stop": ["END"]}}})
    key = make_key(ws)
    assert gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    sent = upstream.last_request.body
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["stop"]) == (
        0.1, 20, 7, ["END"])
    gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO,
                                               "temperature": 0.9, "max_tokens": 5})
    sent = upstream.last_request.body
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.9, 5, 7)
    resolved = _client(people["staff"]).get(f"/api/v1/workspaces/{ws.slug}/resolved/").json()
    assert resolved["roles"]["chat"]["default_params"] == {
        "temperature": 0.1, "max_tokens": 20, "seed": 7, "stop": ["END"]}
    # Embeddings never get chat defaults.
    services.workspace_update(workspace=ws, bindings={"embedding": {
        "connection": str(conn.pk), "model": "test-embedding"}})
    assert gateway.post("/v1/embeddings", key, {"model": "embedding", "input": "x"}
                        ).status_code == 200
    assert "temperature" not in upstream.last_request.body


def test_default_params_refuse_redirecting_or_unknown_fields(people, upstream, make_workspace):
    staff = _client(people["staff"])
    for params in ({"api_base": "http://evil"}, {"model": "x"}, {"temperature": "hot"},
                   {"max_tokens": True}, ["temperature"]):
        r = staff.post("/api/v1/connections/", {
            "name": "bad", "provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "default_params": params,
            "credentials": {"api_key": "sk-some-key-000000001"}}, format="json")
        assert r.status_code == 400, (params, r.content)
        ws = make_workspace(f"P{abs(hash(json.dumps(params))) % 10**6}")
        r = staff.patch(f"/api/v1/workspaces/{ws.slug}/", {"bindings": {"chat": {
            "default_params": params}}}, format="json")
        assert r.status_code == 400, (params, r.content)
    assert not Connection.objects.filter(name="bad").exists()


def test_the_python_client_applies_default_params(upstream, make_connection, make_workspace):
    from asgiref.sync import async_to_sync

    from workspaces.client import WorkspaceClient

    conn = make_connection(upstream, name="c", default_params={"temperature": 0.3,
                                                               "max_tokens": 9})
    ws = make_workspace("Client", chat=conn)
    async_to_sync(WorkspaceClient(ws).complete)(HELLO, max_tokens=4)
    sent = upstream.last_request.body
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 4


# --- usage attribution ------------------------------------------------------------------------

def test_usage_keeps_names_after_deletes_and_groups_by_key_and_user(
        people, upstream, make_connection, make_workspace, gateway):
    conn = make_connection(upstream, name="doomed")
    ws = make_workspace("Doomed", chat=conn)
    key, raw = services.api_key_create(workspace=ws, name="k1", actor=people["alice"])
    assert gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    staff = _client(people["staff"])
    by_key = staff.get("/api/v1/usage/?group_by=api_key").json()["rows"]
    assert [(r["api_key"], r["api_key_name"], r["calls"]) for r in by_key] == [
        (key.pk, "k1", 1)]
    by_user = staff.get("/api/v1/usage/?group_by=user").json()["rows"]
    assert [(r["user"], r["calls"]) for r in by_user] == [("alice", 1)]

    services.workspace_delete(workspace=ws)
    Connection.objects.filter(pk=conn.pk).delete()
    assert UsageRecord.objects.count() == 1
    rows = staff.get("/api/v1/usage/?group_by=workspace,connection").json()["rows"]
    assert [(r["workspace"], r["workspace_name"], r["connection"], r["connection_name"])
            for r in rows] == [(None, "Doomed", None, "doomed")]


def test_last_used_at_is_written_at_most_once_a_minute(upstream, make_connection,
                                                       make_workspace, make_key, gateway,
                                                       django_assert_num_queries):
    conn = make_connection(upstream, name="used")
    key = make_key(make_workspace("Used", chat=conn))
    assert Connection.objects.get(pk=conn.pk).last_used_at is None
    gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    first = Connection.objects.get(pk=conn.pk).last_used_at
    assert first is not None
    assert WorkspaceAPIKey.objects.get().last_used_at is not None
    with django_assert_num_queries(0):
        services.connection_touch(connection_ids=[str(conn.pk)])
    gateway.post("/v1/chat/completions", key, {"model": "chat", "messages": HELLO})
    assert Connection.objects.get(pk=conn.pk).last_used_at == first
    connection_update(connection=conn, default_model="test-model")  # keeps last_used_at
    assert Connection.objects.get(pk=conn.pk).last_used_at == first


def test_the_admin_user_page_lists_personal_connections_without_secrets(people, alices):
    from django.test import Client

    client = Client()
    client.force_login(people["staff"])
    UserDefault.objects.create(user=people["alice"], role="chat", connection=alices)
    page = client.get(f"/admin/auth/user/{people['alice'].pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "alice-own" in text and "Personal connections" in text
    assert "ZK9x" not in text and OWNER_KEY not in text


def test_a_relied_on_default_cannot_leave_its_provider(people, upstream, make_connection,
                                                        make_workspace):
    default = make_connection(upstream, name="the-default")
    connection_set_default(connection=default)
    ws = make_workspace("Relies")
    services.workspace_update(workspace=ws, bindings={"chat": {"provider": "openai_compatible"}})
    r = _client(people["staff"]).patch(f"/api/v1/connections/{default.pk}/", {
        "provider": "openai", "base_url": None, "credentials": {"api_key": "sk-" + "z" * 24}},
        format="json")
    assert r.status_code == 409 and r.json()["error"]["code"] == "connection_in_use"
    stored = Connection.objects.get(pk=default.pk)
    assert stored.provider == "openai_compatible" and stored.is_default


# Transactional: outside a caller's transaction the usage row goes through its own alias, as in
# production (inside one, the write first checks the rows it names).
@pytest.mark.django_db(transaction=True)
def test_a_warm_personal_key_call_reads_nothing_from_the_database(people, alices, gateway):
    from django.db import connection as db_connection
    from django.test.utils import CaptureQueriesContext

    UserDefault.objects.create(user=people["alice"], role="chat", connection=alices)
    _, raw = services.personal_api_key_create(user=people["alice"])
    assert gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO}
                        ).status_code == 200
    with CaptureQueriesContext(db_connection) as captured:
        r = gateway.post("/v1/chat/completions", raw, {"model": "chat", "messages": HELLO})
    assert r.status_code == 200
    statements = [q["sql"].split()[0].upper() for q in captured.captured_queries]
    assert "SELECT" not in statements and "UPDATE" not in statements, statements
    assert "INSERT" not in statements  # the usage row goes through the `usage` alias
    assert UsageRecord.objects.filter(user=people["alice"]).count() == 2


@pytest.mark.parametrize("how", ["deactivated", "deleted"])
def test_a_gone_users_personal_keys_stop_at_once(people, upstream_factory, make_connection,
                                                 gateway, how):
    """Including in a process that answered the key from its cache a moment before (the
    user's keys are cached with their own scope, bumped when the user goes)."""
    shared_up = upstream_factory(name="shared", api_keys={UPSTREAM_KEY})
    services.system_default_set(role="chat", connection=make_connection(shared_up, name="shared"))
    raw = _client(people["alice"]).post("/api/v1/me/api-keys/", {"name": "laptop"},
                                        format="json").json()["key"]
    body = {"model": "chat", "messages": HELLO}
    for _ in range(2):  # the second call is answered from this process's cache
        assert gateway.post("/v1/chat/completions", raw, body).status_code == 200
    calls = shared_up.request_count
    alice = people["alice"]
    if how == "deactivated":
        alice.is_active = False
        alice.save()
    else:
        alice.delete()
    r = gateway.post("/v1/chat/completions", raw, body)
    assert r.status_code == 401 and shared_up.request_count == calls
