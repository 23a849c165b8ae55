"""Connection tests and discovery through a REAL Celery worker on Redis (not eager mode).

The worker runs in this process (celery.contrib.testing.worker.start_worker) against the Redis
broker and result backend of REDIS_URL; CI sets REDIS_URL, so these run there. The database must
be shared with the worker thread, hence transactional tests. Redis is read back to prove that
neither the broker messages nor the result backend (nor the cache) hold a secret.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from django.conf import settings

from connections import diagnostics
from connections.models import Connection, ConnectionTest
from tests.conftest import CANARY, UPSTREAM_KEY
from tests.factories import ConnectionFactory

pytestmark = [
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL,
                       reason="needs Redis: set REDIS_URL (CI does) to run tests through a real "
                              "Celery worker"),
]

OAUTH_SECRET = CANARY  # the OAuth client secret is the canary in the OAuth tests


@pytest.fixture
def redis_client():
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def on_redis(redis_client):
    """Tasks go to the Redis broker (not eager) for the length of the test."""
    from llmconn.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield app
    app.conf.task_always_eager = eager


@pytest.fixture
def start():
    """start() → a context manager running a real worker on the Redis broker."""
    from celery.contrib.testing.worker import start_worker

    from llmconn.celery import app

    def make():
        return start_worker(app, pool="solo", concurrency=1, perform_ping_check=False,
                            shutdown_timeout=30, loglevel="WARNING")

    return make


@pytest.fixture
def worker(on_redis, start):
    with start():
        yield


@pytest.fixture
def quick(monkeypatch):
    """A short provider timeout so that the "hang" case ends quickly."""
    monkeypatch.setattr(diagnostics, "TEST_TIMEOUT_S", 2)


def wait_done(test_id, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        test = ConnectionTest.objects.get(pk=test_id)
        if test.status in ("succeeded", "failed"):
            return test
        time.sleep(0.1)
    raise AssertionError(f"test {test_id} still {test.status} after {seconds} s")


def post_test(staff_client, conn, **body):
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/test/", body, format="json")
    assert r.status_code == 202, r.content
    assert r.json()["status"] == "pending"
    return r.json()["id"]


def redis_dump(client) -> str:
    """Every key and value in the Redis db, message bodies base64-decoded, as one text."""
    parts = []
    for key in client.scan_iter("*"):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [v for pair in client.hgetall(key).items() for v in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        parts.append(key.decode(errors="replace"))
        for value in values:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            parts.append(text)
            parts.extend(_decoded_bodies(text))
    return "\n".join(parts)


def _decoded_bodies(text: str) -> list[str]:
    """Kombu wraps task messages as JSON with a base64 body: decode it too."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    out = []
    if isinstance(data, list):  # unacked hash values are [message, exchange, routing_key]
        data = data[0] if data and isinstance(data[0], dict) else {}
    if isinstance(data, dict) and isinstance(data.get("body"), str):
        try:
            out.append(base64.b64decode(data["body"]).decode(errors="replace"))
        except ValueError:
            pass
    return out


def test_every_error_class_through_a_real_worker(staff_client, worker, quick, upstream,
                                                 closed_port_url, settings):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    results = {}
    cases = [("ok", None), (401, "auth"), (429, "rate_limited"), ("hang", "timeout"),
             ("status400", "bad_request"), (500, "provider_error"), ("model", "model_not_found")]
    for mode, _ in cases:
        upstream.set_mode("ok")
        model = ""
        if mode == "status400":
            upstream.set_mode("status", status=400)
        elif mode == "model":
            model = "no-such-model"
        elif mode != "ok":
            upstream.set_mode(mode)
        test = wait_done(post_test(staff_client, conn, **({"model": model} if model else {})))
        results[mode] = test.error_class or None
    upstream.set_mode("ok")
    down = ConnectionFactory(base_url=closed_port_url)
    results["refused"] = wait_done(post_test(staff_client, down)).error_class
    settings.LLMCONN_EGRESS_ALLOW = []
    before = upstream.request_count
    results["blocked"] = wait_done(post_test(staff_client, conn)).error_class
    assert upstream.request_count == before  # refused before any byte left

    assert results == {"ok": None, 401: "auth", 429: "rate_limited", "hang": "timeout",
                       "status400": "bad_request", 500: "provider_error",
                       "model": "model_not_found", "refused": "unreachable",
                       "blocked": "blocked"}
    conn.refresh_from_db()
    assert conn.status == "failed" and conn.last_error_class == "blocked"


def test_oauth_token_is_refreshed_through_a_real_worker(staff_client, worker, upstream,
                                                        redis_client):
    upstream.oauth_clients = {"client-7": OAUTH_SECRET}
    conn = ConnectionFactory(auth_method="oauth_client_credentials",
                             base_url=upstream.openai_url,
                             config={"token_url": upstream.token_url, "client_id": "client-7"},
                             secrets={"client_secret": OAUTH_SECRET})
    assert wait_done(post_test(staff_client, conn)).status == "succeeded"
    assert wait_done(post_test(staff_client, conn)).status == "succeeded"
    assert upstream.tokens_issued == 1  # cached in Redis between the two tests
    first_token = upstream.requests_to("/v1/chat")[-1].key
    upstream.expire_tokens()  # the provider no longer accepts it: 401, new token, retry
    assert wait_done(post_test(staff_client, conn)).status == "succeeded"
    assert upstream.tokens_issued == 2
    dump = redis_dump(redis_client)
    assert OAUTH_SECRET not in dump
    assert first_token not in dump
    assert upstream.requests_to("/v1/chat")[-1].key not in dump


def test_unsaved_settings_reuse_stored_secrets_through_a_real_worker(staff_client, worker,
                                                                      upstream):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY},
                             default_model="test-model")
    body = {"connection": str(conn.pk), "provider": "openai_compatible",
            "auth_method": "api_key", "base_url": upstream.openai_url + "/",
            "default_model": "test-model-large"}
    r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    assert r.status_code == 202, r.content
    test = wait_done(r.json()["id"])
    assert test.status == "succeeded", test.message
    assert upstream.last_request.key == UPSTREAM_KEY
    assert upstream.last_request.body["model"] == "test-model-large"
    assert test.secrets is None  # emptied when the test finished


def test_broker_message_and_result_backend_hold_no_secret(staff_client, on_redis, start,
                                                          redis_client, upstream):
    upstream.api_keys = {CANARY}
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": CANARY})
    saved_id = post_test(staff_client, conn)
    body = {"provider": "openai_compatible", "auth_method": "api_key",
            "base_url": upstream.openai_url, "default_model": "test-model",
            "credentials": {"api_key": CANARY}}
    r = staff_client.post("/api/v1/connection-tests/", body, format="json")
    unsaved_id = r.json()["id"]

    queued = redis_dump(redis_client)  # no worker yet: the messages wait in the broker
    assert saved_id in queued and unsaved_id in queued  # we really read the messages
    assert CANARY not in queued

    with start():
        assert wait_done(saved_id).status == "succeeded"
        assert wait_done(unsaved_id).status == "succeeded"
        time.sleep(0.5)  # the result is stored just after the row is written
    assert upstream.keys_seen().count(CANARY) == 2
    stored = redis_dump(redis_client)
    assert "celery-task-meta-" in stored and '"succeeded"' in stored  # results are there
    assert CANARY not in stored


def test_discovery_through_a_real_worker(staff_client, worker, upstream):
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    upstream.models = ["alpha", "beta", "gamma"]
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    job = wait_done(r.json()["id"])
    assert (job.status, job.models_found) == ("succeeded", 3)
    listed = staff_client.get(f"/api/v1/connections/{conn.pk}/models/").json()["results"]
    assert [m["id"] for m in listed] == ["alpha", "beta", "gamma"]
    upstream.set_mode(401)
    r = staff_client.post(f"/api/v1/connections/{conn.pk}/discover-models/")
    job = wait_done(r.json()["id"])
    assert (job.status, job.error_class) == ("failed", "auth")
    assert conn.discovered_models.count() == 3


def test_health_sweep_task_through_a_real_worker(worker, upstream, closed_port_url):
    from connections.tasks import connection_health_sweep_task

    for _ in range(5):
        ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    ConnectionFactory(base_url=closed_port_url)
    result = connection_health_sweep_task.delay().get(timeout=60)
    assert result == {"tested": 6, "failed": 1}
    assert Connection.objects.filter(status="ok").count() == 5


@pytest.mark.postgres
@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3",
                    reason="needs PostgreSQL (DATABASE_URL): a worker in another process must "
                           "see the test database")
def test_worker_killed_mid_test_leaves_a_row_the_reaper_fails(staff_client, on_redis, upstream,
                                                              tmp_path):
    """A separate prefork worker; its child is SIGKILLed while the provider call hangs."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import timedelta
    from pathlib import Path

    from django.db import connection as db
    from django.utils import timezone

    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    upstream.set_mode("hang")
    db_url = "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**db.settings_dict)
    if db.settings_dict.get("PASSWORD"):
        db_url = db_url.replace("@", f":{db.settings_dict['PASSWORD']}@", 1)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="llmconn.test_settings",
               DATABASE_URL=db_url, REDIS_URL=settings.REDIS_URL,
               FERNET_KEYS=",".join(settings.FERNET_KEYS), SECRET_KEY=settings.SECRET_KEY)
    pidfile = tmp_path / "worker.pid"
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "llmconn", "worker", "--pool=prefork",
         "--concurrency=1", "--loglevel=WARNING", f"--pidfile={pidfile}", "-n", "killtest@%h"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        test_id = post_test(staff_client, conn)
        deadline = time.monotonic() + 60
        while ConnectionTest.objects.get(pk=test_id).status != "running":
            assert time.monotonic() < deadline, "the worker never started the test"
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)
        while not upstream.requests_to("/v1/chat"):  # the call is in flight
            assert time.monotonic() < deadline
            time.sleep(0.1)
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        assert children, "no pool process found"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)  # the process running the test dies
        time.sleep(1)
        assert ConnectionTest.objects.get(pk=test_id).status == "running"  # nobody will finish it
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    later = timezone.now() + timedelta(seconds=diagnostics.RUNNING_LIMIT_S + 1)
    assert diagnostics.connection_tests_reap(now=later) == 1
    test = ConnectionTest.objects.get(pk=test_id)
    assert (test.status, test.error_class) == ("failed", "timeout")
    assert "worker" in test.message and test.secrets is None
