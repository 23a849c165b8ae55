"""The workspaces admin (Django test client): bindings saved through the services, model
suggestions from discovered models, members, API keys shown once."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from connections.models import Connection, DiscoveredModel
from connections.services import connection_create
from workspaces.models import Membership, Workspace, WorkspaceAPIKey, WorkspaceBinding
from workspaces.services import system_default_set, workspace_create

pytestmark = pytest.mark.django_db

LIST = "/admin/workspaces/workspace/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def conn(db) -> Connection:
    connection = connection_create(name="Shared", provider="openai_compatible",
                                   auth_method="api_key", base_url="http://127.0.0.1:9/v1",
                                   default_model="test-model",
                                   credentials={"api_key": "sk-test-0123456789abcd"})
    now = timezone.now()
    DiscoveredModel.objects.bulk_create([
        DiscoveredModel(connection=connection, model_id=m, discovered_at=now)
        for m in ("test-model", "test-model-large", "test-embedding")])
    return connection


def change_url(workspace) -> str:
    return f"{LIST}{workspace.pk}/change/"


def form(**overrides) -> dict:
    data = {"name": "Research", "slug": "research"}
    for role in ("chat", "agent", "embedding"):
        data[f"{role}_connection"] = ""
        data[f"{role}_model"] = ""
    data.update(overrides)
    return data


def test_add_creates_the_workspace_and_its_bindings_through_the_service(admin_client, conn):
    response = admin_client.post(LIST + "add/", form(slug="", chat_connection=str(conn.pk),
                                                     chat_model="test-model-large"))
    assert response.status_code == 302, response.content.decode()[:3000]
    workspace = Workspace.objects.get(name="Research")
    assert workspace.slug == "research"
    binding = WorkspaceBinding.objects.get(workspace=workspace)
    assert (binding.role, binding.connection_id, binding.model) == ("chat", conn.pk, "test-model-large")
    assert AuditEvent.objects.filter(action="workspace.create").count() == 1


def test_change_sends_only_the_roles_that_changed_and_keeps_fallbacks(admin_client, conn):
    other = connection_create(name="Other", provider="openai_compatible", auth_method="none",
                              base_url="http://127.0.0.1:8/v1")
    ws = workspace_create(name="Research", slug="research", bindings={
        "chat": {"connection": str(conn.pk), "model": "test-model",
                 "fallbacks": [{"connection": str(other.pk), "model": None}]},
        "embedding": {"connection": str(conn.pk), "model": "test-embedding"}})
    page = admin_client.get(change_url(ws)).context["adminform"].form
    assert page.initial["chat_fallbacks"] == "Other"  # the form shows them as it posts them
    response = admin_client.post(change_url(ws), form(
        chat_connection=str(conn.pk), chat_model="test-model-large", chat_fallbacks="Other",
        embedding_connection=str(conn.pk), embedding_model="test-embedding"))
    assert response.status_code == 302, response.content.decode()[:3000]
    chat = WorkspaceBinding.objects.get(workspace=ws, role="chat")
    assert chat.model == "test-model-large"
    assert chat.fallbacks == [{"connection": str(other.pk), "model": None}]
    event = AuditEvent.objects.filter(action="workspace.update").get()
    assert event.changed_fields == ["bindings.chat"]
    assert event.extra["bindings"]["chat"] == {"connection": str(conn.pk),
                                               "model": "test-model-large"}


def test_fallbacks_are_edited_on_the_workspace_page(admin_client, conn):
    other = connection_create(name="Other", provider="openai_compatible", auth_method="none",
                              base_url="http://127.0.0.1:8/v1")
    ws = workspace_create(name="Research", slug="research",
                          bindings={"chat": {"connection": str(conn.pk)}})
    response = admin_client.post(change_url(ws), form(
        chat_connection=str(conn.pk), chat_fallbacks="Other | test-model-large\nShared"))
    assert response.status_code == 302, response.content.decode()[:3000]
    chat = WorkspaceBinding.objects.get(workspace=ws, role="chat")
    assert chat.fallbacks == [{"connection": str(other.pk), "model": "test-model-large"},
                              {"connection": str(conn.pk), "model": None}]
    response = admin_client.post(change_url(ws), form(
        chat_connection=str(conn.pk), chat_fallbacks="Nobody"))
    assert response.status_code == 200
    assert "No connection named &#x27;Nobody&#x27;" in response.content.decode()
    response = admin_client.post(change_url(ws), form(chat_connection=str(conn.pk)))
    assert WorkspaceBinding.objects.get(workspace=ws, role="chat").fallbacks == []


def test_the_model_input_suggests_the_bound_connections_discovered_models(admin_client, conn):
    ws = workspace_create(name="Research", bindings={"chat": {"connection": str(conn.pk)}})
    response = admin_client.get(change_url(ws))
    html = response.content.decode()
    assert 'list="id_chat_model_options"' in html
    chat_list = html.split('id="id_chat_model_options"')[1].split("</datalist>")[0]
    assert 'value="test-model-large"' in chat_list
    data = response.context["llmconn_bindings"]["connections"][str(conn.pk)]
    assert data == {"models": ["test-embedding", "test-model", "test-model-large"],
                    "default_model": "test-model"}


def test_an_inactive_connection_cannot_be_chosen(admin_client, conn):
    ws = workspace_create(name="Research")
    Connection.objects.filter(pk=conn.pk).update(is_active=False)
    response = admin_client.post(change_url(ws), form(chat_connection=str(conn.pk)))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["chat_connection"]
    assert not WorkspaceBinding.objects.exists()


def test_a_duplicate_name_is_an_error_on_the_form_not_a_500(admin_client):
    workspace_create(name="Taken", slug="taken")
    response = admin_client.post(LIST + "add/", form(name="Taken", slug="other"))
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_resolved_view_shows_system_defaults_and_unconfigured_roles(admin_client, conn):
    system_default_set(role="chat", connection=conn, model="test-model")
    ws = workspace_create(name="Research")
    html = admin_client.get(change_url(ws)).content.decode()
    resolved = html.split('id="llmconn-resolved"')[1].split("</table>")[0]
    assert "Shared" in resolved and "system default" in resolved
    assert "not callable" in resolved  # agent and embedding have nothing


def test_api_key_is_shown_once_then_only_its_prefix(admin_client):
    ws = workspace_create(name="Research")
    response = admin_client.post(f"{LIST}{ws.pk}/api-keys/", {"name": "notebook"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = response.context["raw_key"]
    assert raw.startswith("lck_") and raw in response.content.decode()
    key = WorkspaceAPIKey.objects.get(workspace=ws)
    page = admin_client.get(change_url(ws)).content.decode()
    assert raw not in page and key.key_hash not in page
    assert f"{key.prefix}…" in page
    assert AuditEvent.objects.filter(action="workspace.api_key_create").count() == 1


def test_api_key_revoke_goes_through_the_service_and_only_by_post(admin_client):
    ws = workspace_create(name="Research")
    admin_client.post(f"{LIST}{ws.pk}/api-keys/", {"name": "k"})
    key = WorkspaceAPIKey.objects.get()
    url = f"{LIST}{ws.pk}/api-keys/{key.pk}/revoke/"
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url).status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.filter(action="workspace.api_key_revoke").count() == 1


def test_members_are_added_changed_and_removed_through_the_service(admin_client, plain_user):
    ws = workspace_create(name="Research")
    admin_client.post(f"{LIST}{ws.pk}/members/", {"username": plain_user.username,
                                                  "role": "member"})
    admin_client.post(f"{LIST}{ws.pk}/members/", {"username": plain_user.username,
                                                  "role": "manager"})
    membership = Membership.objects.get(workspace=ws)
    assert membership.role == "manager"
    response = admin_client.post(f"{LIST}{ws.pk}/members/", {"username": "nobody"}, follow=True)
    assert "Unknown user" in response.content.decode()
    admin_client.post(f"{LIST}{ws.pk}/members/{membership.pk}/remove/")
    assert not Membership.objects.exists()
    assert AuditEvent.objects.filter(action__startswith="workspace.member").count() == 3


def test_delete_goes_through_the_service(admin_client):
    ws = workspace_create(name="Research")
    admin_client.post(f"{LIST}{ws.pk}/api-keys/", {"name": "k"})
    page = admin_client.get(f"{LIST}{ws.pk}/delete/").content.decode()
    assert "Research: 0 binding(s), 0 member(s), 1 API key(s)" in page and 'name="post"' in page
    response = admin_client.post(f"{LIST}{ws.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Workspace.objects.exists()
    assert AuditEvent.objects.filter(action="workspace.delete").count() == 1


def test_list_counts_members_and_active_keys(admin_client, conn, plain_user,
                                             django_assert_max_num_queries):
    for i in range(3):
        ws = workspace_create(name=f"W{i}", bindings={"chat": {"connection": str(conn.pk)}})
        admin_client.post(f"{LIST}{ws.pk}/members/", {"username": plain_user.username})
    with django_assert_max_num_queries(12):
        response = admin_client.get(LIST)
    rows = {w.name: (w.members_count, w.keys_count) for w in response.context["cl"].result_list}
    assert rows == {"W0": (1, 0), "W1": (1, 0), "W2": (1, 0)}
    assert "Shared · " not in response.content.decode()  # no model: the connection's default
