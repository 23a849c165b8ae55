"""Site-level URLs a new user meets first: `/` and unknown API paths."""

from __future__ import annotations

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_root_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/no-such-thing/", "/api/nothing", "/api/v2/x/y"])
def test_unknown_api_path_is_the_json_404_even_with_debug(client, admin_user, path, debug):
    client.force_login(admin_user)
    with override_settings(DEBUG=debug):
        response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
    assert set(response.json()["error"]) >= {"code", "message", "fields"}


def test_api_path_without_its_slash_still_redirects(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/api/v1/connections?x=1")
    assert response.status_code == 301 and response["Location"] == "/api/v1/connections/?x=1"
