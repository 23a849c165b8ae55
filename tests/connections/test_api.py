"""The connections REST API: CRUD, masking, defaults, presets, dependents, move-bindings."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection

from connections.models import Connection, ConnectionTest, DiscoveredModel
from tests.factories import ConnectionFactory
from workspaces.models import SystemDefault, Workspace, WorkspaceBinding

from .api_support import (  # noqa: F401  (fixtures)
    LIST_URL,
    assert_error,
    bind,
    detail_url,
    make_workspace,
    manager_client,
    manager_user,
    system_default,
)

pytestmark = pytest.mark.django_db

KEY = "sk-test-key-0123456789-WXYZ"
OTHER_KEY = "sk-other-key-9876543210-ABCD"
OUTPUT_FIELDS = {
    "id", "name", "provider", "auth_method", "base_url", "default_model", "config",
    "credentials", "credentials_readable", "is_default", "is_active", "status",
    "last_tested_at", "last_test", "models_count", "used_by_count", "created_at", "updated_at",
    "input_cost_per_million_tokens", "output_cost_per_million_tokens", "timeout_seconds",
    "owner", "default_params", "last_used_at",
}


def create(client, **body):
    body = {"name": "main", "provider": "openai", "credentials": {"api_key": KEY}, **body}
    return client.post(LIST_URL, body, format="json")


@pytest.fixture
def conn(staff_client) -> dict:
    response = create(staff_client)
    assert response.status_code == 201, response.json()
    return response.json()


def stored(pk) -> Connection:
    return Connection.objects.get(pk=pk)


# --- create / read -------------------------------------------------------------------------

def test_create_returns_the_connection_with_a_hint_and_never_the_key(staff_client):
    response = create(staff_client, default_model="gpt-4o-mini", config={"organization": "org-1"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == OUTPUT_FIELDS
    assert body["provider"] == "openai" and body["auth_method"] == "api_key"
    assert body["credentials"] == {"api_key": {"set": True, "hint": "…WXYZ"}}
    assert body["credentials_readable"] is True
    assert body["config"] == {"organization": "org-1"}
    assert body["status"] == "untested" and body["last_test"] is None
    assert body["models_count"] == 0 and body["used_by_count"] == 0
    assert body["is_default"] is False and body["is_active"] is True
    assert KEY not in response.content.decode()
    assert stored(body["id"]).secrets == {"api_key": KEY}


def test_create_records_who_made_it(staff_client, staff_user):
    body = create(staff_client).json()
    assert stored(body["id"]).created_by == staff_user


def test_auth_method_is_required_when_the_provider_has_several(staff_client):
    error = assert_error(create(staff_client, name="o", provider="ollama", credentials={}), 400)
    assert "auth_method" in error["fields"]
    ok = create(staff_client, name="o", provider="ollama", auth_method="none", credentials={})
    assert ok.status_code == 201
    assert ok.json()["credentials"] == {}


def test_unknown_provider_is_refused_naming_the_catalog(staff_client):
    error = assert_error(create(staff_client, provider="skynet"), 400)
    assert "provider" in error["fields"]
    assert "/api/v1/providers/" in error["message"]


def test_duplicate_name_is_refused(staff_client, conn):
    error = assert_error(create(staff_client), 400)
    assert "name" in error["fields"]
    assert Connection.objects.count() == 1


def test_missing_required_credential_is_refused(staff_client):
    error = assert_error(create(staff_client, credentials={}), 400)
    assert "credentials" in error["fields"]
    assert not Connection.objects.exists()


@pytest.mark.parametrize("masked", ["sk-****WXYZ", "••••••••", "…WXYZ", "...WXYZ"])
def test_masked_looking_key_on_create_is_refused_and_nothing_stored(staff_client, masked):
    error = assert_error(create(staff_client, credentials={"api_key": masked}), 400,
                         "masked_secret")
    assert "leave the field out" in error["message"]
    assert not Connection.objects.exists()


def test_config_secret_field_is_refused_with_where_to_send_it(staff_client):
    error = assert_error(create(staff_client, config={"api_key": KEY}), 400)
    assert "credentials" in str(error["fields"]["config"])
    assert not Connection.objects.exists()


def test_base_url_with_user_and_password_is_refused(staff_client):
    error = assert_error(create(staff_client, base_url="https://u:p@api.example.com/v1"), 400)
    assert "base_url" in error["fields"]


def test_retrieve_shows_the_same_shape(staff_client, conn):
    response = staff_client.get(detail_url(conn["id"]))
    assert response.status_code == 200
    assert response.json() == conn


def test_unknown_id_is_404(staff_client):
    assert_error(staff_client.get(detail_url("00000000-0000-0000-0000-000000000000")), 404)


# --- list, filters, pagination --------------------------------------------------------------

def test_list_is_paginated_and_ordered_by_name(staff_client):
    for name in ["b", "a", "c"]:
        ConnectionFactory(name=name)
    body = staff_client.get(LIST_URL, {"page_size": 2}).json()
    assert body["count"] == 3
    assert [c["name"] for c in body["results"]] == ["a", "b"]
    assert body["next"]


def test_list_filters_by_provider_status_and_search(staff_client):
    ConnectionFactory(name="alpha", status="ok")
    ConnectionFactory(name="beta", status="failed")
    ConnectionFactory(name="gamma", provider="openai", base_url=None)

    def names(**params):
        response = staff_client.get(LIST_URL, params)
        assert response.status_code == 200, response.json()
        return [c["name"] for c in response.json()["results"]]

    assert names(provider="openai") == ["gamma"]
    assert names(status="failed") == ["beta"]
    assert names(search="alp") == ["alpha"]
    assert names(search="nothing-matches") == []
    assert names(is_active="true") == ["alpha", "beta", "gamma"]


def test_unknown_status_filter_is_a_400(staff_client):
    error = assert_error(staff_client.get(LIST_URL, {"status": "great"}), 400)
    assert "status" in error["fields"]


def test_list_shows_counts_and_the_newest_test(staff_client):
    from django.utils import timezone

    c = ConnectionFactory(name="counted")
    DiscoveredModel.objects.bulk_create([
        DiscoveredModel(connection=c, model_id=m, discovered_at=timezone.now())
        for m in ("m1", "m2", "m3")])
    bind(make_workspace("w1"), c, "chat")
    bind(make_workspace("w2"), c, "agent")
    ConnectionTest.objects.create(connection=c, provider=c.provider, auth_method=c.auth_method,
                                  status="failed", error_class="auth")
    newest = ConnectionTest.objects.create(connection=c, provider=c.provider,
                                           auth_method=c.auth_method, status="succeeded",
                                           latency_ms=12, finished_at=timezone.now())
    ConnectionTest.objects.create(connection=c, kind="discover", provider=c.provider,
                                  auth_method=c.auth_method, status="running")
    row = staff_client.get(LIST_URL).json()["results"][0]
    assert row["models_count"] == 3
    assert row["used_by_count"] == 2
    assert row["last_test"]["id"] == str(newest.id)
    assert row["last_test"]["status"] == "succeeded"
    assert row["last_test"]["latency_ms"] == 12
    assert set(row["last_test"]) == {"id", "status", "error_class", "latency_ms", "finished_at"}
    assert staff_client.get(detail_url(c)).json()["last_test"]["id"] == str(newest.id)


def test_unreadable_credentials_still_list(staff_client):
    good = ConnectionFactory(name="good")
    bad = ConnectionFactory(name="bad")
    with db_connection.cursor() as cursor:  # a token no configured key can decrypt
        cursor.execute("UPDATE connections_connection SET secrets = %s WHERE id = %s",
                       [b"gAAAAAnot-a-valid-fernet-token", bad.pk.hex
                        if db_connection.vendor == "sqlite" else bad.pk])
    response = staff_client.get(LIST_URL)
    assert response.status_code == 200
    rows = {r["name"]: r for r in response.json()["results"]}
    assert rows["bad"]["credentials_readable"] is False
    assert rows["bad"]["credentials"] == {"api_key": {"set": True, "hint": "", "readable": False}}
    assert rows["good"]["credentials_readable"] is True
    assert staff_client.get(detail_url(good)).status_code == 200
    assert staff_client.get(detail_url(bad)).json()["credentials_readable"] is False


# --- update ---------------------------------------------------------------------------------

def test_patch_without_credentials_keeps_them(staff_client, conn):
    response = staff_client.patch(detail_url(conn["id"]), {"default_model": "gpt-4o"},
                                  format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["default_model"] == "gpt-4o"
    assert response.json()["credentials"] == {"api_key": {"set": True, "hint": "…WXYZ"}}
    assert stored(conn["id"]).secrets == {"api_key": KEY}


def test_patch_with_a_credential_replaces_it(staff_client, conn):
    response = staff_client.patch(detail_url(conn["id"]), {"credentials": {"api_key": OTHER_KEY}},
                                  format="json")
    assert response.status_code == 200
    assert response.json()["credentials"]["api_key"]["hint"] == "…ABCD"
    assert stored(conn["id"]).secrets == {"api_key": OTHER_KEY}


@pytest.mark.parametrize("masked", ["…WXYZ", "WXYZ", "sk-****WXYZ", "••••"])
def test_masked_key_sent_back_is_a_400_and_keeps_the_stored_key(staff_client, conn, masked):
    error = assert_error(
        staff_client.patch(detail_url(conn["id"]), {"credentials": {"api_key": masked}},
                           format="json"), 400, "masked_secret")
    assert "api_key" in error["fields"]["credentials"]
    assert stored(conn["id"]).secrets == {"api_key": KEY}


def test_new_base_url_host_without_secrets_is_a_400(staff_client, conn):
    error = assert_error(
        staff_client.patch(detail_url(conn["id"]), {"base_url": "https://evil.example.com/v1"},
                           format="json"), 400, "credentials_required")
    assert "api_key" in error["message"]
    assert stored(conn["id"]).base_url is None


def test_new_base_url_host_with_secrets_sent_again_is_accepted(staff_client, conn):
    response = staff_client.patch(
        detail_url(conn["id"]),
        {"base_url": "https://proxy.example.com/v1", "credentials": {"api_key": OTHER_KEY}},
        format="json")
    assert response.status_code == 200
    assert response.json()["base_url"] == "https://proxy.example.com/v1"


def test_empty_credential_is_a_400_that_says_what_to_do(staff_client, conn):
    error = assert_error(staff_client.patch(detail_url(conn["id"]),
                                            {"credentials": {"api_key": ""}}, format="json"), 400)
    assert "leave it out" in error["message"]


def test_put_replaces_settings_and_keeps_credentials(staff_client):
    created = create(staff_client, default_model="gpt-4o", config={"organization": "org-1"}).json()
    response = staff_client.put(detail_url(created["id"]),
                                {"name": "renamed", "provider": "openai"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "renamed"
    assert body["default_model"] == "" and body["config"] == {}
    assert body["credentials"] == {"api_key": {"set": True, "hint": "…WXYZ"}}
    assert stored(created["id"]).secrets == {"api_key": KEY}


def test_put_needs_name_and_provider(staff_client, conn):
    error = assert_error(staff_client.put(detail_url(conn["id"]), {"name": "x"}, format="json"),
                         400)
    assert "provider" in error["fields"]


def test_every_update_increases_the_revision(staff_client, conn):
    before = stored(conn["id"]).revision
    staff_client.patch(detail_url(conn["id"]), {"is_active": False}, format="json")
    assert stored(conn["id"]).revision == before + 1


def test_credential_set_to_null_is_removed(staff_client):
    body = create(staff_client, name="b", provider="bedrock", auth_method="aws_access_key",
                  config={"aws_access_key_id": "AKIA1"},
                  credentials={"aws_secret_access_key": KEY,
                               "aws_session_token": OTHER_KEY}).json()
    assert set(body["credentials"]) == {"aws_secret_access_key", "aws_session_token"}
    response = staff_client.patch(detail_url(body["id"]),
                                  {"credentials": {"aws_session_token": None}}, format="json")
    assert response.status_code == 200, response.json()
    assert set(response.json()["credentials"]) == {"aws_secret_access_key"}


# --- delete ---------------------------------------------------------------------------------

def test_delete_removes_an_unused_connection(staff_client, conn):
    assert staff_client.delete(detail_url(conn["id"])).status_code == 204
    assert not Connection.objects.exists()
    assert_error(staff_client.get(detail_url(conn["id"])), 404)


def test_delete_of_a_bound_connection_is_a_409_listing_bindings(staff_client, conn):
    ws = make_workspace("team-a")
    bind(ws, stored(conn["id"]), "chat")
    bind(ws, stored(conn["id"]), "embedding")
    error = assert_error(staff_client.delete(detail_url(conn["id"])), 409, "connection_in_use")
    assert [(b["workspace"], b["role"]) for b in error["bindings"]] == [
        ("team-a", "chat"), ("team-a", "embedding")]
    assert Connection.objects.filter(pk=conn["id"]).exists()
    assert WorkspaceBinding.objects.count() == 2


def test_used_by_count_includes_system_defaults(staff_client, conn):
    system_default(stored(conn["id"]), "chat")
    bind(make_workspace("w"), stored(conn["id"]), "agent")
    assert staff_client.get(detail_url(conn["id"])).json()["used_by_count"] == 2


def test_delete_blocked_by_a_row_dependents_missed_is_a_409_not_a_500(staff_client, conn,
                                                                     monkeypatch):
    # A binding added between the dependents check and the delete (or a protecting model the
    # check does not know) makes the database refuse: still a 409, and nothing deleted.
    import connections.services

    bind(make_workspace("late"), stored(conn["id"]))
    calls = []

    def dependents_missing_the_first_time(*, connection):
        calls.append(1)
        if len(calls) == 1:
            return []
        from connections.selectors import connection_dependents
        return connection_dependents(connection=connection)

    monkeypatch.setattr(connections.services, "connection_dependents",
                        dependents_missing_the_first_time)
    error = assert_error(staff_client.delete(detail_url(conn["id"])), 409, "connection_in_use")
    assert error["bindings"][0]["workspace"] == "late"
    assert Connection.objects.filter(pk=conn["id"]).exists()


def test_delete_of_a_system_default_is_a_409_not_a_500(staff_client, conn):
    system_default(stored(conn["id"]), "chat")
    error = assert_error(staff_client.delete(detail_url(conn["id"])), 409, "connection_in_use")
    assert error["bindings"] == [{"workspace": None, "workspace_name": None, "role": "chat",
                                  "system_default": True, "fallback": False}]
    assert Connection.objects.filter(pk=conn["id"]).exists()


# --- set-default ----------------------------------------------------------------------------

def test_set_default_makes_exactly_one_default_per_provider(staff_client):
    a = create(staff_client, name="a").json()
    b = create(staff_client, name="b").json()
    other = ConnectionFactory(name="other-provider", is_default=True)
    r1 = staff_client.post(f"{detail_url(a['id'])}set-default/")
    assert r1.status_code == 200 and r1.json()["is_default"] is True
    r2 = staff_client.post(f"{detail_url(b['id'])}set-default/")
    assert r2.status_code == 200 and r2.json()["is_default"] is True
    assert list(Connection.objects.filter(provider="openai", is_default=True)
                .values_list("name", flat=True)) == ["b"]
    assert Connection.objects.get(pk=other.pk).is_default is True
    # Again: nothing changes.
    assert staff_client.post(f"{detail_url(b['id'])}set-default/").json()["is_default"] is True


def test_inactive_connection_cannot_become_default(staff_client):
    body = create(staff_client, is_active=False).json()
    error = assert_error(staff_client.post(f"{detail_url(body['id'])}set-default/"), 400)
    assert "is_active" in error["fields"]


# --- dependents and move-bindings -----------------------------------------------------------

def test_dependents_lists_bindings_and_system_defaults(staff_client):
    c = ConnectionFactory(name="used")
    bind(make_workspace("zeta"), c, "agent")
    bind(make_workspace("alpha"), c, "chat")
    system_default(c, "chat")
    response = staff_client.get(f"{detail_url(c)}dependents/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [(b["workspace"], b["role"], b["system_default"]) for b in body["bindings"]] == [
        ("alpha", "chat", False), ("zeta", "agent", False), (None, "chat", True)]


def test_dependents_of_an_unused_connection_is_empty(staff_client, conn):
    assert staff_client.get(f"{detail_url(conn['id'])}dependents/").json() == {
        "count": 0, "bindings": []}


def test_move_bindings_moves_everything_and_bumps_workspace_revisions(staff_client):
    source = ConnectionFactory(name="old")
    target = ConnectionFactory(name="new")
    w1, w2, untouched = make_workspace("w1"), make_workspace("w2"), make_workspace("w3")
    bind(w1, source, "chat")
    bind(w1, source, "embedding")
    bind(w2, source, "agent")
    bind(untouched, target, "chat")
    revisions = {w.pk: w.revision for w in Workspace.objects.all()}
    source_revision = source.revision
    response = staff_client.post(f"{detail_url(source)}move-bindings/", {"to": str(target.pk)},
                                 format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"moved_bindings": 3, "moved_system_defaults": 0,
                               "moved_fallbacks": 0, "workspaces": ["w1", "w2"],
                               "to": str(target.pk)}
    assert not WorkspaceBinding.objects.filter(connection=source).exists()
    assert WorkspaceBinding.objects.filter(connection=target).count() == 4
    after = {w.pk: w.revision for w in Workspace.objects.all()}
    assert after[w1.pk] == revisions[w1.pk] + 1
    assert after[w2.pk] == revisions[w2.pk] + 1
    assert after[untouched.pk] == revisions[untouched.pk]
    assert Connection.objects.get(pk=source.pk).revision == source_revision
    # Now the old one can go.
    assert staff_client.delete(detail_url(source)).status_code == 204


def test_move_bindings_moves_system_defaults_and_bumps_every_workspace(staff_client):
    source = ConnectionFactory(name="old")
    target = ConnectionFactory(name="new")
    ws = make_workspace("w1")
    system_default(source, "chat")
    response = staff_client.post(f"{detail_url(source)}move-bindings/", {"to": str(target.pk)},
                                 format="json")
    assert response.json()["moved_system_defaults"] == 1
    assert SystemDefault.objects.get(role="chat").connection_id == target.pk
    assert Workspace.objects.get(pk=ws.pk).revision == ws.revision + 1


@pytest.mark.parametrize("case", ["itself", "missing", "inactive", "not-a-uuid", "no-body"])
def test_move_bindings_refuses_a_bad_target_and_moves_nothing(staff_client, case):
    source = ConnectionFactory(name="old")
    inactive = ConnectionFactory(name="off", is_active=False)
    bind(make_workspace("w1"), source)
    body = {"itself": {"to": str(source.pk)},
            "missing": {"to": "00000000-0000-0000-0000-000000000000"},
            "inactive": {"to": str(inactive.pk)},
            "not-a-uuid": {"to": "nope"},
            "no-body": {}}[case]
    error = assert_error(staff_client.post(f"{detail_url(source)}move-bindings/", body,
                                           format="json"), 400)
    assert "to" in error["fields"]
    assert WorkspaceBinding.objects.get().connection_id == source.pk


def test_move_bindings_refuses_a_target_that_cannot_serve_a_role(staff_client):
    source = ConnectionFactory(name="old")
    target = create(staff_client, name="claude", provider="anthropic").json()
    bind(make_workspace("w1"), source, "chat")
    bind(make_workspace("w2"), source, "embedding")
    error = assert_error(staff_client.post(f"{detail_url(source)}move-bindings/",
                                           {"to": target["id"]}, format="json"), 400,
                         "capability_missing")
    assert "embedding" in error["message"]
    assert WorkspaceBinding.objects.filter(connection=source).count() == 2


# --- from-preset ----------------------------------------------------------------------------

def test_from_preset_creates_a_local_ollama_connection(staff_client):
    response = staff_client.post(f"{LIST_URL}from-preset/", {"preset": "ollama", "name": "local"},
                                 format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["provider"], body["auth_method"], body["default_model"]) == (
        "ollama", "none", "llama3.2")
    assert body["base_url"] is None  # the provider's default endpoint
    assert stored(body["id"]).effective_base_url == "http://localhost:11434/v1"


def test_from_preset_with_credentials_and_overrides(staff_client):
    response = staff_client.post(f"{LIST_URL}from-preset/", {
        "preset": "openai", "name": "oa", "credentials": {"api_key": KEY},
        "default_model": "gpt-4.1"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["default_model"] == "gpt-4.1"
    assert response.json()["credentials"] == {"api_key": {"set": True, "hint": "…WXYZ"}}
    vllm = staff_client.post(f"{LIST_URL}from-preset/", {
        "preset": "vllm", "name": "gpu", "base_url": "http://10.0.0.5:8000/v1"}, format="json")
    assert vllm.json()["base_url"] == "http://10.0.0.5:8000/v1"


def test_from_preset_uses_the_presets_auth_method_unless_the_body_names_one(staff_client):
    # litellm_proxy offers four auth methods; its preset does not name one: the first applies.
    response = staff_client.post(f"{LIST_URL}from-preset/", {
        "preset": "litellm_proxy", "name": "team-proxy", "base_url": "http://10.0.0.9:4000",
        "credentials": {"api_key": KEY}}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["auth_method"] == "api_key"
    named = staff_client.post(f"{LIST_URL}from-preset/", {
        "preset": "ollama", "name": "keyed-ollama", "auth_method": "api_key",
        "credentials": {"api_key": KEY}}, format="json")
    assert named.status_code == 201 and named.json()["auth_method"] == "api_key"


@pytest.mark.parametrize("provider,given,stored_url", [
    ("ollama", "http://localhost:11434", "http://localhost:11434/v1"),
    ("ollama", "http://localhost:11434/", "http://localhost:11434/v1"),
    ("litellm_proxy", "https://proxy.example.com", "https://proxy.example.com/v1"),
    ("vllm", "http://10.0.0.5:8000", "http://10.0.0.5:8000/v1"),
    ("lmstudio", "http://127.0.0.1:1234", "http://127.0.0.1:1234/v1"),
    ("vllm", "http://10.0.0.5:8000/custom", "http://10.0.0.5:8000/custom"),  # a path is kept
    ("openai_compatible", "http://10.0.0.5:8000", "http://10.0.0.5:8000"),  # not for others
])
def test_a_local_server_base_url_without_a_path_gets_v1(staff_client, provider, given, stored_url):
    response = staff_client.post(LIST_URL, {
        "name": "srv", "provider": provider, "auth_method": "none" if provider != "litellm_proxy"
        else "api_key", "base_url": given, "credentials": {"api_key": KEY}
        if provider == "litellm_proxy" else {}}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["base_url"] == stored_url
    assert stored(response.json()["id"]).base_url == stored_url
    patched = staff_client.patch(f"{LIST_URL}{response.json()['id']}/", {"base_url": given},
                                 format="json")
    assert patched.status_code == 200 and patched.json()["base_url"] == stored_url


def test_from_unknown_preset_is_a_400_listing_presets(staff_client):
    error = assert_error(staff_client.post(f"{LIST_URL}from-preset/",
                                           {"preset": "nope", "name": "x"}, format="json"),
                         400, "unknown_preset")
    assert "ollama" in error["message"]


def test_from_preset_still_needs_the_secrets(staff_client):
    error = assert_error(staff_client.post(f"{LIST_URL}from-preset/",
                                           {"preset": "openai", "name": "x"}, format="json"), 400)
    assert "credentials" in error["fields"]
    assert not Connection.objects.exists()
