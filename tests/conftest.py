"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

# A canary secret: a value that must never show up in any response, log, task or audit row.
CANARY = "sk-CANARY-7f3a9c1e5b2d4a6f8e0c"


@pytest.fixture
def canary() -> str:
    return CANARY


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user(
        "staff", "staff@example.com", "pw-staff-1234", is_staff=True, is_superuser=True
    )


@pytest.fixture
def plain_user(db):
    return get_user_model().objects.create_user("plain", "plain@example.com", "pw-plain-1234")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


@pytest.fixture
def user_client(plain_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(plain_user)
    return client
