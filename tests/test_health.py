"""Health endpoints."""

import pytest
from django.db import connection


def test_healthz_answers_without_touching_the_database(client):
    # No db fixture: any database access here would raise.
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == "ok" and checks["cache"] == "ok"


@pytest.mark.django_db
def test_readyz_names_the_database_when_it_is_down(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("connection refused to postgres://user:hunter2@db")

    monkeypatch.setattr(connection, "cursor", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "down"
    assert "database" in body["error"]["message"]
    assert "hunter2" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_reports_the_usage_spools_depth(client, settings, tmp_path):
    from workspaces import usage_spool

    settings.VAR_DIR = tmp_path
    usage_spool._append(tmp_path / "usage-spool" / "spool.jsonl", ['{"a": 1}', '{"a": 2}'])
    body = client.get("/readyz").json()
    assert body["usage_spool"]["file"] == 2
    if settings.REDIS_URL:
        assert isinstance(body["usage_spool"]["redis"], int)
