"""Admin parity (issue 18): system defaults and budgets are managed in the admin through the
same services as the API (audit events, refusals as form errors)."""

from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from connections.services import connection_create
from workspaces.models import Budget, SystemDefault
from workspaces.budgets import budget_create
from workspaces.services import workspace_create

pytestmark = pytest.mark.django_db

DEFAULTS = "/admin/workspaces/systemdefault/"
BUDGETS = "/admin/workspaces/budget/"


@pytest.fixture
def admin_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def conn(db):
    return connection_create(name="Shared", provider="openai_compatible", auth_method="none",
                             base_url="http://127.0.0.1:9/v1", default_model="test-model")


def test_a_system_default_is_set_changed_and_cleared_in_the_admin(admin_client, conn):
    response = admin_client.post(DEFAULTS + "add/", {"role": "chat", "connection": str(conn.pk),
                                                     "model": "test-model-large"})
    assert response.status_code == 302, response.content.decode()[:2000]
    default = SystemDefault.objects.get(role="chat")
    assert (default.connection_id, default.model) == (conn.pk, "test-model-large")
    response = admin_client.post(f"{DEFAULTS}{default.pk}/change/",
                                 {"connection": str(conn.pk), "model": ""})
    assert response.status_code == 302
    assert SystemDefault.objects.get(role="chat").model is None
    response = admin_client.post(DEFAULTS + "add/", {"role": "chat", "connection": str(conn.pk)})
    assert response.status_code == 200 and "This role has a default" in response.content.decode()
    response = admin_client.post(f"{DEFAULTS}{default.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not SystemDefault.objects.exists()
    actions = list(AuditEvent.objects.filter(action__startswith="system_default").order_by("seq")
                   .values_list("action", flat=True))
    assert actions == ["system_default.set", "system_default.set", "system_default.clear"]


def test_a_budget_is_created_with_its_spend_shown_and_its_target_fixed(admin_client, conn):
    ws = workspace_create(name="Team", slug="team")
    response = admin_client.post(BUDGETS + "add/", {
        "name": "team cap", "scope": "workspace", "workspace": "team", "connection": "",
        "period": "month", "metric": "cost", "limit": "10", "warn_threshold": "0.8",
        "is_active": "on"})
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get()
    assert (budget.workspace_id, budget.limit) == (ws.pk, 10)
    listing = admin_client.get(BUDGETS).content.decode()
    assert "team cap" in listing and "(0%)" in listing
    page = admin_client.get(f"{BUDGETS}{budget.pk}/change/").content.decode()
    assert "Spent this period" in page and "resets" in page
    response = admin_client.post(f"{BUDGETS}{budget.pk}/change/", {
        "name": "team cap", "period": "day", "metric": "tokens", "limit": "5000",
        "warn_threshold": "", "is_active": "on", "scope": "connection",
        "connection": str(conn.pk)})  # the target cannot change: disabled fields are ignored
    assert response.status_code == 302, response.content.decode()[:3000]
    budget.refresh_from_db()
    assert (budget.scope, budget.workspace_id, budget.period, budget.metric) == (
        "workspace", ws.pk, "day", "tokens")
    assert AuditEvent.objects.filter(action="budget.update").exists()


def test_a_second_budget_for_the_same_target_is_a_form_error(admin_client, conn):
    budget_create(scope="connection", connection=str(conn.pk), limit=5)
    response = admin_client.post(BUDGETS + "add/", {
        "scope": "connection", "workspace": "", "connection": str(conn.pk),
        "period": "month", "metric": "cost", "limit": "7", "is_active": "on"})
    assert response.status_code == 200
    assert "already has a month cost budget" in response.content.decode()
    assert Budget.objects.count() == 1


def test_a_budget_without_its_target_is_a_form_error(admin_client):
    response = admin_client.post(BUDGETS + "add/", {
        "scope": "workspace", "workspace": "", "connection": "", "period": "month",
        "metric": "cost", "limit": "7", "is_active": "on"})
    assert response.status_code == 200 and not Budget.objects.exists()
