"""Helpers shared by the connections API tests (tests/connections/test_api*.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from workspaces.models import Membership, MemberRole, SystemDefault, Workspace, WorkspaceBinding

LIST_URL = "/api/v1/connections/"
ERROR_KEYS = {"code", "message", "fields"}


def detail_url(connection_or_id) -> str:
    pk = getattr(connection_or_id, "pk", connection_or_id)
    return f"{LIST_URL}{pk}/"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is `status` in the one error shape (and, if given, with `code`)."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    assert ERROR_KEYS <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


def make_workspace(slug: str) -> Workspace:
    return Workspace.objects.create(name=slug.title(), slug=slug)


def bind(workspace: Workspace, connection, role: str = "chat", model: str | None = None):
    return WorkspaceBinding.objects.create(workspace=workspace, role=role, connection=connection,
                                           model=model)


def system_default(connection, role: str = "chat"):
    return SystemDefault.objects.create(role=role, connection=connection)


@pytest.fixture
def manager_user(db):
    user = get_user_model().objects.create_user("manager", "m@example.com", "pw-manager-1234")
    Membership.objects.create(workspace=make_workspace("team-m"), user=user,
                              role=MemberRole.MANAGER)
    return user


@pytest.fixture
def member_user(db):
    user = get_user_model().objects.create_user("member", "mb@example.com", "pw-member-1234")
    Membership.objects.create(workspace=make_workspace("team-b"), user=user,
                              role=MemberRole.MEMBER)
    return user


@pytest.fixture
def manager_client(manager_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(manager_user)
    return client


@pytest.fixture
def member_client(member_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(member_user)
    return client
