"""GET|POST /api/v1/budgets/, GET|PATCH|DELETE /api/v1/budgets/{id}/: validation, audit,
permissions (staff manage; managers read their workspaces' budgets)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from audit.models import AuditEvent
from connections.services import connection_create
from workspaces import budgets, services
from workspaces.models import Budget

URL = "/api/v1/budgets/"


@pytest.fixture(autouse=True)
def _clean():
    cache.clear()
    budgets.clear_local_cache()


@pytest.fixture
def setup(db):
    conn = connection_create(name="c", provider="openai_compatible", auth_method="api_key",
                             base_url="http://127.0.0.1:9/v1", default_model="m",
                             credentials={"api_key": "sk-budget-api-000000000"})
    ws = services.workspace_create(name="Alpha")
    ws2 = services.workspace_create(name="Beta")
    return {"conn": conn, "ws": ws, "ws2": ws2}


def test_create_a_workspace_budget(staff_client, setup):
    response = staff_client.post(URL, {"scope": "workspace", "workspace": "alpha",
                                       "period": "month", "metric": "cost", "limit": "25.5",
                                       "warn_threshold": "0.9", "name": "alpha monthly"},
                                 format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["scope"] == "workspace" and body["workspace"] == "alpha"
    assert body["limit"] == "25.50000000" and body["used"] == "0.00000000"
    assert body["warn_threshold"] == "0.900" and body["exceeded"] is False
    assert body["resets_at"].endswith("T00:00:00Z")
    event = AuditEvent.objects.get(action="budget.create")
    assert event.target_id == str(body["id"])


def test_create_a_connection_token_budget_with_defaults(staff_client, setup):
    response = staff_client.post(URL, {"scope": "connection", "connection": str(setup["conn"].pk),
                                       "metric": "tokens", "limit": 100000}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["connection_name"] == "c" and body["workspace"] is None
    assert body["period"] == "month" and body["limit"] == "100000" and body["used"] == "0"


@pytest.mark.parametrize("payload,field", [
    ({"scope": "workspace", "workspace": "nope", "limit": 1}, "workspace"),
    ({"scope": "workspace", "limit": 1}, "workspace"),
    ({"scope": "connection", "limit": 1}, "connection"),
    ({"scope": "connection", "connection": "00000000-0000-0000-0000-000000000000",
      "limit": 1}, "connection"),
    ({"scope": "workspace", "workspace": "alpha", "connection": "CONN", "limit": 1},
     "connection"),
    ({"scope": "workspace", "workspace": "alpha", "limit": 0}, "limit"),
    ({"scope": "workspace", "workspace": "alpha", "limit": "abc"}, "limit"),
    ({"scope": "workspace", "workspace": "alpha", "metric": "tokens", "limit": "10.5"},
     "limit"),
    ({"scope": "workspace", "workspace": "alpha", "limit": 1, "warn_threshold": 2},
     "warn_threshold"),
    ({"scope": "workspace", "workspace": "alpha", "limit": 1, "period": "week"}, "period"),
    ({"scope": "team", "limit": 1}, "scope"),
    ({"scope": "workspace", "workspace": "alpha", "limit": 1, "used": 5}, "used"),
])
def test_bad_budgets_are_400_naming_the_field(staff_client, setup, payload, field):
    payload = {k: (str(setup["conn"].pk) if v == "CONN" else v) for k, v in payload.items()}
    response = staff_client.post(URL, payload, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    assert not Budget.objects.exists()


def test_a_second_budget_for_the_same_target_period_and_metric_is_a_409(staff_client, setup):
    body = {"scope": "workspace", "workspace": "alpha", "period": "day", "limit": 5}
    assert staff_client.post(URL, body, format="json").status_code == 201
    response = staff_client.post(URL, body, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "budget_exists"
    assert staff_client.post(URL, {**body, "metric": "tokens"}, format="json").status_code == 201


def test_patch_changes_the_limit_and_refuses_a_new_target(staff_client, setup):
    budget = budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=5)
    response = staff_client.patch(f"{URL}{budget.pk}/", {"limit": "7", "is_active": False},
                                  format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["limit"] == "7.00000000" and response.json()["is_active"] is False
    event = AuditEvent.objects.filter(action="budget.update").get()
    assert set(event.changed_fields) == {"limit", "is_active"}
    response = staff_client.patch(f"{URL}{budget.pk}/", {"workspace": "beta"}, format="json")
    assert response.status_code == 400 and "workspace" in response.json()["error"]["fields"]


def test_delete_removes_the_budget_and_is_audited(staff_client, setup):
    budget = budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=5)
    assert staff_client.delete(f"{URL}{budget.pk}/").status_code == 204
    assert not Budget.objects.exists()
    assert AuditEvent.objects.filter(action="budget.delete").count() == 1
    assert staff_client.get(f"{URL}{budget.pk}/").status_code == 404
    assert staff_client.get(f"{URL}abc/").status_code == 404


def test_managers_read_their_workspace_budgets_and_change_nothing(api_client, setup):
    User = get_user_model()
    manager = User.objects.create_user("mgr", password="pw-mgr-12345")
    services.membership_set(workspace=setup["ws"], user=manager, role="manager")
    mine = budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=5)
    theirs = budgets.budget_create(scope="workspace", workspace=setup["ws2"], limit=5)
    conn_budget = budgets.budget_create(scope="connection", connection=setup["conn"], limit=5)
    api_client.force_authenticate(manager)
    listed = api_client.get(URL).json()["results"]
    assert [b["id"] for b in listed] == [mine.pk]
    assert api_client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert api_client.get(f"{URL}{conn_budget.pk}/").status_code == 404
    assert api_client.patch(f"{URL}{mine.pk}/", {"limit": 50}, format="json").status_code == 403
    assert api_client.delete(f"{URL}{mine.pk}/").status_code == 403
    assert api_client.post(URL, {"scope": "workspace", "workspace": "alpha", "limit": 9},
                           format="json").status_code == 403
    Budget.objects.get(pk=mine.pk, limit=5)


def test_others_see_no_budgets_and_anonymous_is_401(api_client, user_client, setup):
    budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=5)
    assert user_client.get(URL).json()["results"] == []
    assert api_client.get(URL).status_code == 401


def test_deleting_a_workspace_deletes_its_budgets(staff_client, setup):
    budgets.budget_create(scope="workspace", workspace=setup["ws"], limit=5)
    assert staff_client.delete("/api/v1/workspaces/alpha/").status_code == 204
    assert not Budget.objects.exists()
