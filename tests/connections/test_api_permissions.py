"""Who may do what with connections: anonymous 401, signed-in strangers and members 403,
workspace managers read active connections without config or hints, staff everything.

With personal connections switched off (LLMCONN_PERSONAL_CONNECTIONS=false) this is the whole
story; with them on (the default) every signed-in user also reads the active shared connections
and manages personal ones (tests/workspaces/test_people.py, the authorization matrix)."""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import ConnectionFactory

from .api_support import (  # noqa: F401  (fixtures)
    LIST_URL,
    assert_error,
    detail_url,
    manager_client,
    manager_user,
    member_client,
    member_user,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def conn():
    return ConnectionFactory(name="shared", config={})


def requests_for(conn):
    """Every endpoint of the connections API, as (method, path, body)."""
    d = detail_url(conn)
    return [
        ("get", LIST_URL, None),
        ("post", LIST_URL, {"name": "n", "provider": "openai", "credentials": {"api_key": "k" * 20}}),
        ("post", f"{LIST_URL}from-preset/", {"preset": "ollama", "name": "n"}),
        ("get", d, None),
        ("patch", d, {"default_model": "x"}),
        ("put", d, {"name": "n", "provider": "openai_compatible", "base_url": conn.base_url}),
        ("delete", d, None),
        ("post", f"{d}set-default/", None),
        ("get", f"{d}dependents/", None),
        ("post", f"{d}move-bindings/", {"to": str(conn.pk)}),
    ]


def call(client, method, path, body):
    return getattr(client, method)(path, body, format="json") if body is not None else \
        getattr(client, method)(path)


def test_anonymous_gets_401_everywhere(api_client, conn):
    for method, path, body in requests_for(conn):
        response = call(api_client, method, path, body)
        assert_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Token")


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)
def test_signed_in_user_without_a_managed_workspace_gets_403_everywhere(user_client, conn):
    for method, path, body in requests_for(conn):
        assert_error(call(user_client, method, path, body), 403, "permission_denied")


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)
def test_workspace_member_who_is_not_a_manager_gets_403(member_client, conn):
    for method, path, body in requests_for(conn):
        assert_error(call(member_client, method, path, body), 403)


@override_settings(LLMCONN_PERSONAL_CONNECTIONS=False)
def test_manager_may_only_list_and_read(manager_client, conn):
    for method, path, body in requests_for(conn):
        response = call(manager_client, method, path, body)
        if (method, path) in (("get", LIST_URL), ("get", detail_url(conn))):
            assert response.status_code == 200, (method, path)
        else:
            assert_error(response, 403)
    assert ConnectionFactory._meta.model.objects.get(pk=conn.pk).default_model == "test-model"


def test_manager_sees_active_connections_without_config_or_hints(manager_client):
    active = ConnectionFactory(name="active", provider="openai", base_url=None,
                               config={"organization": "org-secretish"})
    inactive = ConnectionFactory(name="inactive", is_active=False)
    rows = manager_client.get(LIST_URL).json()["results"]
    assert [r["name"] for r in rows] == ["active"]
    for row in rows + [manager_client.get(detail_url(active)).json()]:
        assert "config" not in row
        assert "credentials" not in row and "credentials_readable" not in row
        assert {"id", "name", "provider", "status", "is_default", "used_by_count"} <= set(row)
    assert_error(manager_client.get(detail_url(inactive)), 404)
    assert "org-secretish" not in manager_client.get(LIST_URL).content.decode()


def test_manager_cannot_list_inactive_ones_through_filters(manager_client):
    ConnectionFactory(name="inactive", is_active=False)
    body = manager_client.get(LIST_URL, {"is_active": "false"}).json()
    assert body["count"] == 0


def test_staff_sees_inactive_connections(staff_client):
    ConnectionFactory(name="inactive", is_active=False)
    assert staff_client.get(LIST_URL).json()["count"] == 1


def test_token_authentication_works_and_a_bad_token_is_401(staff_user, conn):
    token = Token.objects.create(user=staff_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(LIST_URL).status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_error(client.get(LIST_URL), 401, "authentication_failed")


def test_session_login_works_for_staff(client, staff_user, conn):
    client.force_login(staff_user)
    response = client.get(LIST_URL, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_session_writes_need_a_csrf_token(staff_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = client.post(LIST_URL, {"name": "x", "provider": "openai"},
                           content_type="application/json")
    assert_error(response, 403)
