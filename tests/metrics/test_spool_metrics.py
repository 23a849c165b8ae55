"""GET /metrics reports the usage spool's depth (rows the database did not take yet), per
store, as /readyz does: from Redis and from the file spool, and says when Redis is unreadable."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from workspaces import usage_spool

from .conftest import asgi_request, parse

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def staff_token(staff_user) -> str:
    return Token.objects.create(user=staff_user).key


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """An empty spool: its own var/ directory and an empty Redis list."""
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    client = usage_spool._client()
    if client is not None:
        client.delete(usage_spool.REDIS_KEY)
    yield tmp_path / "usage-spool"
    if client is not None:
        client.delete(usage_spool.REDIS_KEY)


def scrape(app, token) -> dict:
    response = asgi_request(app, "GET", "/metrics", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 200, response.text
    return parse(response.text)


def gauge(samples, name, store):
    return samples.get((name, frozenset({("store", store)})))


def test_spool_depth_gauge_follows_the_rows_kept(asgi_app, staff_token, spool, monkeypatch):
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (REDIS_URL): the spool's list is in Redis")
    # A drainer thread an earlier test woke may still be running in this process: it must not
    # write (and dead-letter) this test's hand-made rows while the gauges are read.
    monkeypatch.setattr(usage_spool, "drain", lambda: 0)
    samples = scrape(asgi_app, staff_token)
    assert gauge(samples, "llmconn_usage_spool_rows", "redis") == 0
    assert gauge(samples, "llmconn_usage_spool_rows", "file") == 0
    assert gauge(samples, "llmconn_usage_spool_readable", "redis") == 1

    rows = [{"request_id": f"req_{i}", "model": "m"} for i in range(3)]
    usage_spool._client().rpush(usage_spool.REDIS_KEY, *[usage_spool._line(r) for r in rows])
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "spool.jsonl").write_text("".join(usage_spool._line(r) + "\n" for r in rows[:2]))
    samples = scrape(asgi_app, staff_token)
    assert gauge(samples, "llmconn_usage_spool_rows", "redis") == 3
    assert gauge(samples, "llmconn_usage_spool_rows", "file") == 2
    assert usage_spool.depth() == {"redis": 3, "file": 2}  # what /readyz shows

    # Redis unreachable: its count is left out (not a reassuring 0) and marked unreadable.
    monkeypatch.setattr(settings, "REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens
    samples = scrape(asgi_app, staff_token)
    assert gauge(samples, "llmconn_usage_spool_rows", "redis") is None
    assert gauge(samples, "llmconn_usage_spool_readable", "redis") == 0
    assert gauge(samples, "llmconn_usage_spool_rows", "file") == 2
