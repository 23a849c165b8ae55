"""A budget holds across processes: two uvicorn servers share its counter in Redis.

Needs PostgreSQL (the servers share the test database) and Redis (the shared cache that holds
the revision stamp and the budget counters); CI provides both.
"""

from __future__ import annotations

import httpx
import pytest

from workspaces import budgets, services
from workspaces.models import UsageRecord

from .conftest import _require_postgres, require_shared_cache, start_server, stop_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]
KEY = "sk-live-budget-0000000001"


@pytest.fixture(scope="module")
def two_servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URLs of two uvicorn processes serving the app on the same database and cache."""
    _require_postgres()
    require_shared_cache()
    from tests.upstream import free_port

    processes, urls = [], []
    try:
        for name in ("a", "b"):
            port = free_port()
            log = tmp_path_factory.mktemp(f"uvicorn-{name}") / "uvicorn.log"
            processes.append(start_server(log, port))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            stop_server(process)


def _chat(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": HELLO},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_budget_stops_calls_at_the_limit_across_two_processes(
        two_servers, upstream_factory, make_connection, make_workspace, make_key):
    server_a, server_b = two_servers
    up = upstream_factory(name="live", api_keys={KEY})
    ws = make_workspace("Live budget", chat=make_connection(up, key=KEY))
    key = make_key(ws)

    first = _chat(server_a, key)
    assert first.status_code == 200, first.text
    per_call = first.json()["usage"]["total_tokens"]
    # Created here, seen by both servers on their next call (the revision stamp moved).
    budget = budgets.budget_create(scope="workspace", workspace=ws, period="day",
                                    metric="tokens", limit=3 * per_call, name="live")

    assert _chat(server_b, key).status_code == 200
    assert _chat(server_a, key).status_code == 200  # 3 calls: the limit is reached
    refused_b, refused_a = _chat(server_b, key), _chat(server_a, key)
    for refused in (refused_a, refused_b):
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert refused.json()["error"]["budget"]["id"] == budget.pk
        assert int(refused.headers["Retry-After"]) > 0
    assert up.request_count == 3
    assert UsageRecord.objects.filter(workspace=ws).count() == 3

    # Raised in this process: both servers let calls through again.
    budgets.budget_update(budget=budget, limit=5 * per_call)
    assert _chat(server_b, key).status_code == 200
    assert _chat(server_a, key).status_code == 200
    assert _chat(server_b, key).status_code == 429
