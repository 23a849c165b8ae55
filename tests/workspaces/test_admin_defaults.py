"""#17's fields in the admin: default_params on connections and on workspace bindings (checked
by the same services as the API), provider-string bindings chosen per role, personal gateway
keys (no workspace) in the API key lists, usage rows of deleted workspaces and connections."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from connections.models import Connection
from connections.services import connection_create, connection_delete, connection_set_default
from workspaces.models import UsageRecord, WorkspaceBinding
from workspaces.selectors import resolved_roles
from workspaces.services import personal_api_key_create, workspace_create, workspace_delete

pytestmark = pytest.mark.django_db

WS = "/admin/workspaces/workspace/"
CONN = "/admin/connections/connection/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


def make(name="Shared", **kwargs) -> Connection:
    kwargs.setdefault("provider", "openai_compatible")
    return connection_create(name=name, auth_method="api_key",
                             base_url="http://127.0.0.1:9/v1", default_model="test-model",
                             credentials={"api_key": "sk-test-0123456789abcd"}, **kwargs)


def form(**overrides) -> dict:
    data = {"name": "Research", "slug": "research"}
    for role in ("chat", "agent", "embedding"):
        data.update({f"{role}_connection": "", f"{role}_model": "", f"{role}_fallbacks": "",
                     f"{role}_default_params": ""})
    data.update(overrides)
    return data


def connection_form(connection, **overrides) -> dict:
    data = {"name": connection.name, "auth_method": "api_key",
            "base_url": connection.base_url, "default_model": connection.default_model,
            "is_active": "on"}
    data.update(overrides)
    return data


# --- default_params on a connection ---------------------------------------------------------

def test_connection_default_params_are_saved_and_shown_again(admin_client):
    conn = make()
    url = f"{CONN}{conn.pk}/change/"
    response = admin_client.post(url, connection_form(
        conn, default_params='{"temperature": 0.2, "max_tokens": 512}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    conn.refresh_from_db()
    assert conn.default_params == {"temperature": 0.2, "max_tokens": 512}
    page = admin_client.get(url).context["adminform"].form
    assert json.loads(page["default_params"].value()) == {"temperature": 0.2,
                                                          "max_tokens": 512}
    assert "&quot;max_tokens&quot;: 512" in admin_client.get(url).content.decode()
    # Emptied: no default parameters any more.
    admin_client.post(url, connection_form(conn, default_params=""))
    conn.refresh_from_db()
    assert conn.default_params == {}


@pytest.mark.parametrize("text, words", [
    ('{"api_base": "http://evil"}', "api_base cannot be a default parameter"),
    ('{"temperature": "hot"}', "temperature"),
    ("[1, 2]", "Enter a JSON object"),
    ("{temperature: 1", "Enter a JSON object"),
])
def test_bad_connection_default_params_are_a_field_error(admin_client, text, words):
    conn = make()
    response = admin_client.post(f"{CONN}{conn.pk}/change/",
                                 connection_form(conn, default_params=text))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert words in " ".join(errors["default_params"]), errors
    conn.refresh_from_db()
    assert conn.default_params == {}


# --- default_params on a binding --------------------------------------------------------------

def test_binding_default_params_go_through_the_service_and_into_resolved(admin_client):
    conn = make(default_params={"temperature": 0.9, "seed": 7})
    ws = workspace_create(name="Research", bindings={"chat": {"connection": str(conn.pk)}})
    url = f"{WS}{ws.pk}/change/"
    response = admin_client.post(url, form(chat_connection=str(conn.pk),
                                           chat_default_params='{"temperature": 0.1}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    binding = WorkspaceBinding.objects.get(workspace=ws, role="chat")
    assert binding.default_params == {"temperature": 0.1}
    # The binding's override the connection's (connection < binding).
    assert resolved_roles(workspace=ws)["chat"]["default_params"] == {"temperature": 0.1,
                                                                      "seed": 7}
    page = admin_client.get(url)
    assert page.context["adminform"].form.initial["chat_default_params"] == {"temperature": 0.1}
    row = page.content.decode().split('<tr data-role="chat">')[1].split("</tr>")[0]
    assert "&quot;temperature&quot;: 0.1" in row and "&quot;seed&quot;: 7" in row
    response = admin_client.post(url, form(chat_connection=str(conn.pk),
                                           chat_default_params='{"api_key": "x"}'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "api_key cannot be a default parameter" in " ".join(errors["chat_default_params"])
    binding.refresh_from_db()
    assert binding.default_params == {"temperature": 0.1}


# --- provider-string bindings -----------------------------------------------------------------

def test_a_role_can_bind_a_providers_default_connection(admin_client):
    first, second = make("First"), make("Second")
    connection_set_default(connection=first)
    ws = workspace_create(name="Research")
    url = f"{WS}{ws.pk}/change/"
    html = admin_client.get(url).content.decode()
    assert 'value="provider:openai_compatible"' in html
    assert "default connection (now: First)" in html
    response = admin_client.post(url, form(chat_connection="provider:openai_compatible",
                                           chat_model="test-model-large"))
    assert response.status_code == 302, response.content.decode()[:2000]
    binding = WorkspaceBinding.objects.get(workspace=ws, role="chat")
    assert (binding.connection_id, binding.provider, binding.model) == (
        None, "openai_compatible", "test-model-large")
    assert resolved_roles(workspace=ws)["chat"]["connection_name"] == "First"
    resolved = admin_client.get(url).content.decode().split('<tr data-role="chat">')[1]
    assert "binding: the provider&#x27;s default" in resolved.split("</tr>")[0]
    page = admin_client.get(url)
    assert page.context["adminform"].form.initial["chat_connection"] == \
        "provider:openai_compatible"
    assert "openai_compatible&#x27;s default" in admin_client.get(WS).content.decode()
    # It follows set-default.
    connection_set_default(connection=second)
    assert resolved_roles(workspace=ws)["chat"]["connection_name"] == "Second"
    # Back to the system default: the provider is cleared too.
    response = admin_client.post(url, form())
    assert response.status_code == 302
    binding = WorkspaceBinding.objects.filter(workspace=ws, role="chat").first()
    assert binding is None or (binding.connection_id, binding.provider) == (None, "")


def test_an_unknown_provider_is_a_field_error(admin_client):
    ws = workspace_create(name="Research")
    response = admin_client.post(f"{WS}{ws.pk}/change/", form(chat_connection="provider:nope"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["chat_connection"]


# --- API keys without a workspace; usage rows of deleted things ---------------------------------

def test_personal_keys_are_listed_as_the_users(admin_client):
    user = get_user_model().objects.create_user("alice", "a@example.com", "pw-alice-1234")
    key, raw = personal_api_key_create(user=user, name="laptop")
    ws = workspace_create(name="Research")
    from workspaces.services import api_key_create
    api_key_create(workspace=ws, name="ci")
    response = admin_client.get("/admin/workspaces/workspaceapikey/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "personal key of alice" in html and "workspace Research" in html
    assert raw not in html and key.key_hash not in html
    html = admin_client.get("/admin/workspaces/workspaceapikey/?kind=personal").content.decode()
    assert "laptop" in html and "workspace Research" not in html
    detail = admin_client.get(f"/admin/workspaces/workspaceapikey/{key.pk}/change/")
    assert detail.status_code == 200 and "personal key of alice" in detail.content.decode()
    user_page = admin_client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert key.prefix in user_page and raw not in user_page and key.key_hash not in user_page


def test_usage_rows_keep_the_names_of_deleted_workspaces_and_connections(admin_client):
    conn = make("Old server")
    ws = workspace_create(name="Gone team", bindings={"chat": {"connection": str(conn.pk)}})
    UsageRecord.objects.create(workspace=ws, workspace_name=ws.name, connection=conn,
                               connection_name=conn.name, model="test-model")
    workspace_delete(workspace=ws)
    connection_delete(connection=conn)
    row = UsageRecord.objects.get()
    assert (row.workspace_id, row.connection_id) == (None, None)
    response = admin_client.get("/admin/workspaces/usagerecord/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Gone team" in html and "Old server" in html and "(deleted)" in html
