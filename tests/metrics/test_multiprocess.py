"""Multiprocess mode: two gunicorn workers (uvicorn worker class, as docker-compose runs them)
serve /v1 calls; one scrape of either worker sees the sum. Needs PostgreSQL (the server
processes share the test database)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector

from tests.workspaces.conftest import ROOT, _database_url, _require_postgres

from .conftest import parse, value

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def gunicorn_server(tmp_path):
    """(base URL, metrics directory) of gunicorn with two uvicorn workers."""
    _require_postgres()
    from tests.upstream import free_port

    port, directory = free_port(), tmp_path / "prom"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="llmconn.test_settings",
               DATABASE_URL=_database_url(), REDIS_URL=settings.REDIS_URL or "",
               PROMETHEUS_MULTIPROC_DIR=str(directory), LLMCONN_METRICS_ALLOW="127.0.0.1",
               ALLOWED_HOSTS="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "llmconn.asgi:application",
             "-c", "python:llmconn.gunicorn_conf", "-k", "uvicorn_worker.UvicornWorker",
             "-w", "2", "-b", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield base, directory
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _requests_by_process(directory: Path, workspace: str) -> dict[str, float]:
    """{pid: /v1 requests of `workspace` that process counted}, from each sample file alone."""
    found = {}
    for path in directory.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for s in family.samples:
                if s.name == "llmconn_gateway_requests_total" and \
                        s.labels.get("workspace") == workspace:
                    pid = path.stem.split("_")[-1]
                    found[pid] = found.get(pid, 0) + s.value
    return found


def test_one_scrape_sums_the_requests_of_every_worker(
        gunicorn_server, upstream, make_connection, make_workspace, make_key):
    base, directory = gunicorn_server
    key = make_key(make_workspace("Multi", chat=make_connection(upstream, name="multi")))
    calls = 0
    # A new connection per call, so the kernel hands calls to both workers; keep calling
    # until each has served some (bounded).
    while calls < 200:
        response = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                              headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                              json={"model": "chat", "messages": HELLO})
        assert response.status_code == 200, response.text
        calls += 1
        if calls >= 10 and len(_requests_by_process(directory, "multi")) >= 2:
            break
    per_process = _requests_by_process(directory, "multi")
    assert len(per_process) == 2, per_process  # both workers served calls
    assert sum(per_process.values()) == calls

    # Scraped from the allowed address, without credentials; whichever worker answers.
    for _ in range(2):
        scraped = httpx.get(f"{base}/metrics", timeout=30)
        assert scraped.status_code == 200
        samples = parse(scraped.text)
        assert value(samples, "llmconn_gateway_requests_total", workspace="multi",
                     status_class="2xx") == calls
        assert value(samples, "llmconn_provider_calls_total", workspace="multi") == calls
        assert value(samples, "llmconn_gateway_added_latency_seconds_count",
                     endpoint="chat") == calls
