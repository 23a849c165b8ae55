"""set-default under concurrency, through the API, on PostgreSQL (real row locks)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection as db_connection
from rest_framework.test import APIClient

from connections.models import Connection
from tests.factories import ConnectionFactory

from .api_support import LIST_URL, detail_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_postgres():
    if db_connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://... (CI does). SQLite "
                    "serializes writers, so it cannot show the race.")


def test_concurrent_set_default_calls_end_with_exactly_one_default(staff_user):
    conns = [ConnectionFactory(name=f"c{i}", provider="openai", base_url=None) for i in range(8)]
    ConnectionFactory(name="other", is_default=True)  # another provider's default stays
    barrier = threading.Barrier(len(conns))
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(conn):
        client = APIClient()
        client.force_authenticate(staff_user)
        try:
            barrier.wait()
            response = client.post(f"{detail_url(conn)}set-default/")
            with lock:
                statuses.append(response.status_code)
        finally:
            db_connection.close()  # this thread's own database connection

    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(statuses) == len(conns)
    assert set(statuses) <= {200, 409}, statuses  # a lost race is a clean 409, never a 500
    assert Connection.objects.filter(provider="openai", is_default=True).count() == 1
    assert Connection.objects.filter(provider="openai_compatible", is_default=True).count() == 1


def test_concurrent_set_default_repeated_rounds_keep_one_default(staff_user):
    conns = [ConnectionFactory(name=f"r{i}", provider="openai", base_url=None) for i in range(4)]
    for _ in range(3):
        barrier = threading.Barrier(len(conns))

        def worker(conn):
            client = APIClient()
            client.force_authenticate(staff_user)
            try:
                barrier.wait()
                client.post(f"{detail_url(conn)}set-default/")
            finally:
                db_connection.close()

        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Connection.objects.filter(provider="openai", is_default=True).count() == 1
    client = APIClient()
    client.force_authenticate(staff_user)
    defaults = [r for r in client.get(LIST_URL, {"is_default": "true"}).json()["results"]]
    assert len(defaults) == 1
