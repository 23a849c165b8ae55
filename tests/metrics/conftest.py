"""Fixtures for the metrics tests: the workspace fixtures, and scraping helpers."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import async_to_sync
from prometheus_client.parser import text_string_to_metric_families

from tests.workspaces.conftest import (  # noqa: F401 - fixtures shared with the gateway tests
    _fresh_resolution_cache,
    make_connection,
    make_key,
    make_workspace,
)


@pytest.fixture(scope="session")
def asgi_app():
    """llmconn.asgi.application, the production entry point."""
    from tests.asgi_client import production_app

    return production_app()


def asgi_request(app, method: str, path: str, **kwargs) -> httpx.Response:
    """One request through the ASGI app in this process (sync work on this thread, so it sees
    the test's transaction)."""
    from django.core import signals
    from django.db import close_old_connections

    async def run():
        transport = httpx.ASGITransport(app=app, client=kwargs.pop("client", ("127.0.0.1", 5)))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, **kwargs)

    # As Django's test client does: the test's connection (in its transaction) must not be
    # closed by Django's request signals.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        return async_to_sync(run)()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a scrape, parsed with prometheus-client's parser."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
