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


# --- The fake provider (tests/upstream.py; its docstring documents the API) -------------------
UPSTREAM_KEY = "sk-upstream-test-key-0001"


@pytest.fixture
def upstream_factory():
    """Start fake upstreams: `upstream_factory(name="b", api_keys={"k"})`; all stop after the test."""
    from tests.upstream import Upstream

    started = []

    def make(**kwargs):
        kwargs.setdefault("name", f"upstream{len(started) + 1}")
        up = Upstream(**kwargs).start()
        started.append(up)
        return up

    yield make
    for up in started:
        up.stop()


@pytest.fixture
def upstream(upstream_factory):
    """One fake OpenAI/Anthropic/OAuth upstream on 127.0.0.1 accepting `UPSTREAM_KEY`."""
    return upstream_factory(name="upstream", api_keys={UPSTREAM_KEY},
                            oauth_clients={"test-client": "test-client-secret-0001"})


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    from tests.upstream import free_port

    return f"http://127.0.0.1:{free_port()}/v1"


def pytest_unconfigure(config):
    """litellm's exit handlers log after pytest has closed the captured streams; silence them."""
    import logging

    logging.disable(logging.CRITICAL)


@pytest.fixture(autouse=True)
def _close_usage_connection():
    """The `usage` alias keeps its connection (CONN_MAX_AGE None); close the test thread's
    after each test, so the test database can be dropped at the end of the session."""
    yield
    from django.db import connections

    usage = connections["usage"] if "usage" in connections.databases else None
    if usage is not None and usage.connection is not None and not usage.in_atomic_block:
        usage.close()


def pytest_collection_modifyitems(items):
    """Transactional database tests may also use the `usage` alias (llmconn/settings.py): the
    same test database (a test mirror of `default`), through which usage rows are written
    outside a transaction. pytest-django allows only `default` unless a test names its
    databases. Other database tests run inside a transaction, where usage rows are written on
    the default connection (and Django would open a transaction on every allowed alias)."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is not None and "databases" in marker.kwargs:
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        transactional = bool(marker and (marker.kwargs.get("transaction") or (
            marker.args and marker.args[0]))) or bool({"transactional_db", "live_server"}
                                                       & fixtures)
        if not transactional:
            continue
        kwargs = {**(marker.kwargs if marker else {}), "databases": "__all__"}
        args = marker.args if marker else ()
        item.own_markers.insert(0, pytest.mark.django_db(*args, **kwargs).mark)
