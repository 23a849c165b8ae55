"""The audit list as each connection's and workspace's History: filtered, titled, linked."""

from __future__ import annotations

import pytest
from django.test import Client

from connections.services import connection_create, connection_update
from workspaces.services import workspace_create

pytestmark = pytest.mark.django_db


def test_history_lists_only_that_targets_events_and_links_back(staff_user):
    client = Client()
    client.force_login(staff_user)
    conn = connection_create(name="Main", provider="ollama", auth_method="none")
    connection_update(connection=conn, default_model="llama3.2")
    workspace_create(name="Research")
    response = client.get(f"/admin/connections/connection/{conn.pk}/history/", follow=True)
    html = response.content.decode()
    assert "History of connection “Main”" in html
    events = response.context["cl"].result_list
    assert [e.action for e in events] == ["connection.update", "connection.create"]
    assert f'href="/admin/connections/connection/{conn.pk}/change/"' in html
    grouped = client.get("/admin/audit/auditevent/?action_group=workspace").context["cl"].result_list
    assert [e.action for e in grouped] == ["workspace.create"]


def test_staff_without_model_permissions_read_the_audit_log(django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw-ops-12345", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get("/admin/audit/auditevent/").status_code == 200
    assert client.get("/admin/connections/connection/").status_code == 200
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
