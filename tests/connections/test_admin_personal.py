"""Personal connections in the connections admin: staff see another user's personal connection
as metadata only (the API's rule, connections.api.permissions.sees_in_full) and may only
deactivate it. Never its config, credential hints, prices, timeout or default parameters; no
test, discovery, rotation, move or delete through the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEvent
from connections.models import Connection, ConnectionTest
from connections.services import connection_create

pytestmark = pytest.mark.django_db

LIST = "/admin/connections/connection/"
# The last four characters of the secret are its hint ("…Q9WZ"): distinctive on purpose.
SECRET = "sk-personal-secret-value-Q9WZ"
HINT = "Q9WZ"
MARKER = "cfgmarker-2718"


def change_url(connection, tail="change/") -> str:
    return f"{LIST}{connection.pk}/{tail}"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_user("alice", "alice@example.com", "pw-alice-1234")


def make(owner=None, name="Alice's key", **kwargs) -> Connection:
    kwargs.setdefault("provider", "openai_compatible")
    kwargs.setdefault("auth_method", "api_key")
    kwargs.setdefault("base_url", "http://127.0.0.1:9/v1")
    kwargs.setdefault("default_model", "test-model")
    kwargs.setdefault("credentials", {"api_key": SECRET})
    kwargs.setdefault("config", {"extra_headers": {"X-Marker": MARKER}})
    kwargs.setdefault("default_params", {"temperature": 0.37})
    kwargs.setdefault("timeout_seconds", 77)
    kwargs.setdefault("input_cost_per_million_tokens", "7.777")
    return connection_create(name=name, owner=owner, **kwargs)


def hidden(html: str) -> list[str]:
    """What of the settings only the owner may see appears in `html`."""
    found = [word for word in (HINT, MARKER, "0.37", "7.777", SECRET) if word in html]
    if 'name="secret__api_key"' in html or 'name="cfg__' in html:
        found.append("form inputs")
    return found


def test_shared_connection_page_shows_its_hint_and_config(admin_client):
    """Positive control: the words `hidden` looks for are on a shared connection's page."""
    shared = make(name="Shared key")
    html = admin_client.get(change_url(shared)).content.decode()
    assert set(hidden(html)) >= {HINT, MARKER, "0.37", "7.777", "form inputs"}


def test_staff_see_another_users_personal_connection_as_metadata_only(admin_client, owner):
    personal = make(owner)
    response = admin_client.get(change_url(personal))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Alice&#x27;s key" in html and "alice" in html and "test-model" in html
    assert 'id="llmconn-personal"' in html and 'name="deactivate"' in html
    assert hidden(html) == []
    # Every other page about it says no more (the change-provider picker is the same page).
    for url in (change_url(personal) + "?change_provider=1", LIST, LIST + "?kind=personal",
                f"/admin/auth/user/{owner.pk}/change/"):
        page = admin_client.get(url, follow=True)
        assert page.status_code == 200, url
        assert hidden(page.content.decode()) == [], url


def test_the_users_page_links_to_the_metadata_page(admin_client, owner):
    personal = make(owner)
    html = admin_client.get(f"/admin/auth/user/{owner.pk}/change/").content.decode()
    assert change_url(personal) in html and hidden(html) == []


def test_list_says_whose_connection_it_is_and_filters_by_kind(admin_client, owner):
    make(owner)
    make(name="Shared key")
    html = admin_client.get(LIST + "?kind=personal").content.decode()
    assert "Alice&#x27;s key" in html and "Shared key" not in html
    html = admin_client.get(LIST + "?kind=shared").content.decode()
    assert "Shared key" in html and "Alice&#x27;s key" not in html


def test_staff_deactivate_a_personal_connection_through_the_service(admin_client, owner):
    personal = make(owner)
    response = admin_client.post(change_url(personal), {"deactivate": "Deactivate"}, follow=True)
    assert response.status_code == 200
    personal.refresh_from_db()
    assert personal.is_active is False
    assert AuditEvent.objects.filter(action="connection.update", target_id=str(personal.pk),
                                     changed_fields__contains=["is_active"]).exists()
    assert "only its owner can activate it again" in response.content.decode()


def test_staff_cannot_change_anything_else_of_a_personal_connection(admin_client, owner):
    personal = make(owner)
    form = {"name": "Renamed", "auth_method": "api_key", "base_url": "http://127.0.0.1:8/v1",
            "default_model": "other", "is_active": "on", "secret__api_key": "sk-new-9999"}
    assert admin_client.post(change_url(personal), form).status_code == 403
    for tail in ("rotate-secret/", "rollback-secret/", "move-bindings/", "delete/"):
        assert admin_client.post(change_url(personal, tail),
                                 {"secret__api_key": "sk-new-9999", "post": "yes"}
                                 ).status_code == 403, tail
    assert admin_client.get(change_url(personal, "move-bindings/")).status_code == 403
    assert admin_client.get(change_url(personal, "delete/")).status_code == 403
    personal.refresh_from_db()
    assert personal.name == "Alice's key" and personal.is_active
    assert personal.secrets == {"api_key": SECRET}
    assert Connection.objects.filter(pk=personal.pk).exists()


def test_list_actions_skip_personal_connections_except_deactivate(admin_client, owner):
    personal = make(owner)
    selected = {"_selected_action": [str(personal.pk)]}
    response = admin_client.post(LIST, {"action": "test_selected", **selected}, follow=True)
    assert "staff may only deactivate them" in " ".join(
        str(m) for m in response.context["messages"])
    response = admin_client.post(LIST, {"action": "discover_models", **selected}, follow=True)
    assert not ConnectionTest.objects.filter(connection=personal).exists()
    response = admin_client.post(LIST, {"action": "delete_selected", "post": "yes", **selected})
    assert "another user&#x27;s personal connection" in response.content.decode()
    assert Connection.objects.filter(pk=personal.pk).exists()
    admin_client.post(LIST, {"action": "deactivate_selected", **selected})
    personal.refresh_from_db()
    assert personal.is_active is False


def test_staff_own_personal_connection_is_theirs_in_full(admin_client, staff_user):
    mine = make(staff_user, name="Staff's own")
    html = admin_client.get(change_url(mine)).content.decode()
    assert HINT in html and 'name="secret__api_key"' in html


def test_workspace_binding_choices_never_offer_personal_connections(admin_client, owner):
    make(owner)
    make(name="Shared key")
    html = admin_client.get("/admin/workspaces/workspace/add/").content.decode()
    assert "Shared key" in html and "Alice&#x27;s key" not in html
    html = admin_client.get("/admin/workspaces/systemdefault/add/").content.decode()
    assert "Shared key" in html and "Alice&#x27;s key" not in html


def test_a_fallback_named_like_a_personal_connection_is_the_shared_one(admin_client, owner):
    from workspaces.models import WorkspaceBinding
    from workspaces.services import workspace_create

    shared_backup = make(name="Backup")
    make(owner, name="Backup")  # a user's personal connection with the same name
    main = make(name="Main")
    ws = workspace_create(name="Research", bindings={"chat": {"connection": str(main.pk)}})
    data = {"name": "Research", "slug": "research", "chat_connection": str(main.pk),
            "chat_fallbacks": "Backup"}
    response = admin_client.post(f"/admin/workspaces/workspace/{ws.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    chat = WorkspaceBinding.objects.get(workspace=ws, role="chat")
    assert chat.fallbacks == [{"connection": str(shared_backup.pk), "model": None}]

