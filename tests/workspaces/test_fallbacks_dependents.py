"""A connection used only as a fallback is a dependent: listed, not deletable, moved along."""

from __future__ import annotations

import pytest

from connections.services import connection_create
from workspaces import services
from workspaces.models import WorkspaceBinding


def _conn(name):
    return connection_create(name=name, provider="openai_compatible", auth_method="api_key",
                             base_url="http://127.0.0.1:9/v1", default_model="m",
                             credentials={"api_key": f"sk-{name}-0000000000000"})


@pytest.fixture
def setup(db):
    primary, spare, other = _conn("primary"), _conn("spare"), _conn("other")
    ws = services.workspace_create(name="Team", bindings={
        "chat": {"connection": str(primary.pk),
                 "fallbacks": [{"connection": str(spare.pk), "model": None}]}})
    return {"primary": primary, "spare": spare, "other": other, "ws": ws}


def test_a_fallback_only_connection_is_listed_as_a_dependent(staff_client, setup):
    url = f"/api/v1/connections/{setup['spare'].pk}/"
    rows = staff_client.get(url + "dependents/").json()
    rows = rows["results"] if isinstance(rows, dict) and "results" in rows else rows
    rows = rows["bindings"] if isinstance(rows, dict) else rows
    assert rows == [{"workspace": "team", "workspace_name": "Team", "role": "chat",
                     "system_default": False, "fallback": True}]
    assert staff_client.get(url).json()["used_by_count"] == 1
    assert staff_client.get(f"/api/v1/connections/{setup['other'].pk}/").json()[
        "used_by_count"] == 0


def test_deleting_a_fallback_only_connection_is_a_409(staff_client, setup):
    response = staff_client.delete(f"/api/v1/connections/{setup['spare'].pk}/")
    assert response.status_code == 409
    body = response.json()["error"]
    assert body["code"] == "connection_in_use"
    assert body["bindings"][0]["fallback"] is True


def test_move_bindings_rewrites_fallbacks(staff_client, setup):
    response = staff_client.post(f"/api/v1/connections/{setup['spare'].pk}/move-bindings/",
                                 {"to": str(setup["other"].pk)}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["moved_fallbacks"] == 1
    assert response.json()["workspaces"] == ["team"]
    binding = WorkspaceBinding.objects.get(workspace=setup["ws"], role="chat")
    assert binding.fallbacks == [{"connection": str(setup["other"].pk), "model": None}]
    assert staff_client.delete(f"/api/v1/connections/{setup['spare'].pk}/").status_code == 204


def test_moving_a_fallback_onto_the_bindings_own_connection_drops_the_duplicate(
        staff_client, setup):
    response = staff_client.post(f"/api/v1/connections/{setup['spare'].pk}/move-bindings/",
                                 {"to": str(setup["primary"].pk)}, format="json")
    assert response.status_code == 200, response.json()
    binding = WorkspaceBinding.objects.get(workspace=setup["ws"], role="chat")
    assert binding.connection_id == setup["primary"].pk and binding.fallbacks == []
