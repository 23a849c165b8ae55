"""Failure modes: what llmconn does when Redis or the database is down, or an upstream hangs
or never stops talking.

Redis and database outages are real: the app is served by uvicorn in a subprocess with
production settings (DEBUG off) and REDIS_URL or DATABASE_URL pointing at a port where nothing
listens. A worker killed during a test is covered by
tests/connections/test_tasks_worker.py::test_worker_killed_mid_test_leaves_a_row_the_reaper_fails
(a prefork worker whose pool process is SIGKILLed; the reaper fails the row).
"""

from __future__ import annotations

import httpx
import pytest

from providers.checks import ConnectionSettings, list_models, test_connection
from tests.conftest import UPSTREAM_KEY

from .support import app_env, closed_port_url, prepare_database, served_app

# --- Redis down -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_down(tmp_path_factory):
    """(base URL, staff token, log path) of the app with REDIS_URL at a closed port."""
    tmp = tmp_path_factory.mktemp("redis-down")
    env = app_env(tmp, REDIS_URL=closed_port_url("redis", "/0"))
    token = prepare_database(env)
    with served_app(env, tmp / "uvicorn.log") as base:
        yield base, token, tmp / "uvicorn.log"


def api(redis_down) -> httpx.Client:
    base, token, _ = redis_down
    return httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30)


def create_connection(client: httpx.Client, name: str, base_url: str) -> dict:
    r = client.post("/api/v1/connections/", json={
        "name": name, "provider": "openai_compatible", "auth_method": "api_key", "base_url": base_url,
        "default_model": "test-model", "credentials": {"api_key": UPSTREAM_KEY}})
    assert r.status_code == 201, r.text
    return r.json()


def test_with_redis_down_connection_crud_still_works(redis_down):
    with api(redis_down) as client:
        conn = create_connection(client, "crud", "http://127.0.0.1:9/v1")
        assert client.get("/api/v1/connections/").json()["count"] >= 1
        r = client.patch(f"/api/v1/connections/{conn['id']}/", json={"default_model": "other"})
        assert r.status_code == 200 and r.json()["default_model"] == "other"
        assert client.get(f"/api/v1/connections/{conn['id']}/").status_code == 200
        assert client.delete(f"/api/v1/connections/{conn['id']}/").status_code == 204


@pytest.mark.parametrize("endpoint", ["test", "discover", "unsaved"])
def test_with_redis_down_starting_a_test_is_a_503_naming_the_task_queue_and_leaves_no_pending_row(
        redis_down, endpoint):
    with api(redis_down) as client:
        conn = create_connection(client, f"queue-{endpoint}", "http://127.0.0.1:9/v1")
        path, body = {
            "test": (f"/api/v1/connections/{conn['id']}/test/", {}),
            "discover": (f"/api/v1/connections/{conn['id']}/discover-models/", None),
            "unsaved": ("/api/v1/connection-tests/", {"connection": conn["id"]}),
        }[endpoint]
        r = client.post(path, json=body) if body is not None else client.post(path)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["code"] == "task_queue_unavailable"
        assert "task queue" in error["message"] and "Redis" in error["message"]
        assert "Traceback" not in r.text
        rows = client.get("/api/v1/connection-tests/",
                          params={"connection": conn["id"]}).json()["results"]
        assert rows, "the request should have left a row saying what happened"
        assert all(row["status"] == "failed" for row in rows), rows
        assert "task queue" in rows[0]["message"]


def test_with_redis_down_readyz_names_redis_for_cache_and_broker(redis_down):
    base, _, _ = redis_down
    r = httpx.get(f"{base}/readyz", timeout=30)
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["cache"] == "down" and body["checks"]["broker"] == "down"
    assert body["checks"]["database"] == "ok"
    assert "cache (Redis)" in body["error"]["message"]
    assert "broker (Redis)" in body["error"]["message"]
    assert "redis://" not in r.text  # never a connection string


def test_with_redis_down_the_gateway_still_answers_from_the_database(redis_down, upstream):
    with api(redis_down) as client:
        conn = create_connection(client, "gateway", upstream.openai_url)
        r = client.post("/api/v1/workspaces/", json={
            "name": "Redis down", "bindings": {"chat": {"connection": conn["id"]}}})
        assert r.status_code == 201, r.text
        key = client.post(f"/api/v1/workspaces/{r.json()['slug']}/api-keys/",
                          json={"name": "k"}).json()["key"]
    base, _, _ = redis_down
    r = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from upstream."


# --- database down ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_down(tmp_path_factory):
    """(base URL, log path) of the app with DATABASE_URL at a closed port."""
    tmp = tmp_path_factory.mktemp("database-down")
    url = closed_port_url("postgres", "/llmconn").replace("postgres://", "postgres://app:pw@")
    env = app_env(tmp, DATABASE_URL=url, DB_POOL_TIMEOUT="2")  # the pool waits this long
    with served_app(env, tmp / "uvicorn.log") as base:
        yield base, tmp / "uvicorn.log", url


API_REQUESTS = [
    ("GET", "/api/v1/connections/", "Token 0123456789abcdef0123456789abcdef01234567", None),
    ("POST", "/api/v1/connections/", "Token 0123456789abcdef0123456789abcdef01234567",
     {"name": "x", "provider": "openai", "credentials": {"api_key": "sk-" + "x" * 20}}),
    ("GET", "/api/v1/workspaces/", "Token 0123456789abcdef0123456789abcdef01234567", None),
]
GATEWAY_REQUESTS = [
    ("POST", "/v1/chat/completions", "Bearer lck_" + "a" * 40,
     {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/embeddings", "Bearer lck_" + "a" * 40, {"model": "embedding", "input": "x"}),
    ("GET", "/v1/models", "Bearer lck_" + "a" * 40, None),
]


def _assert_no_internals(text: str, url: str) -> None:
    for marker in ("Traceback", "psycopg", "OperationalError", url.split("@")[1], "app:pw"):
        assert marker not in text, marker


@pytest.mark.parametrize("method,path,auth,body", API_REQUESTS)
def test_with_the_database_down_the_api_answers_503_in_the_error_shape(database_down, method,
                                                                       path, auth, body):
    base, _, url = database_down
    r = httpx.request(method, base + path, headers={"Authorization": auth}, json=body,
                      timeout=30)
    assert r.status_code == 503, r.text
    assert r.json() == {"error": {"code": "database_unavailable",
                                  "message": "The database is unavailable: try again shortly.",
                                  "fields": {}}}
    assert r.headers["Retry-After"]
    _assert_no_internals(r.text, url)


@pytest.mark.parametrize("method,path,auth,body", GATEWAY_REQUESTS)
def test_with_the_database_down_the_gateway_answers_503_in_openai_format(database_down, method,
                                                                         path, auth, body):
    base, _, url = database_down
    r = httpx.request(method, base + path, headers={"Authorization": auth}, json=body,
                      timeout=30)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "database_unavailable" and error["type"] == "server_error"
    assert set(error) == {"message", "type", "code", "param"}
    _assert_no_internals(r.text, url)


def test_with_the_database_down_readyz_and_admin_answer_503_without_traceback(database_down):
    base, log_path, url = database_down
    r = httpx.get(f"{base}/readyz", timeout=30)
    assert r.status_code == 503 and r.json()["checks"]["database"] == "down"
    assert "database" in r.json()["error"]["message"]
    _assert_no_internals(r.text, url)
    # A signed-in browser: the session is read from the database.
    r = httpx.get(f"{base}/admin/", cookies={"sessionid": "x" * 32}, timeout=30)
    assert r.status_code == 503, r.text[:500]
    _assert_no_internals(r.text, url)
    assert "app:pw" not in log_path.read_text(errors="replace")  # the password is not logged


# --- upstreams that hang or never stop --------------------------------------------------------


def settings_for(up, **overrides) -> ConnectionSettings:
    values = {"provider": "openai_compatible", "auth_method": "api_key",
              "base_url": up.openai_url, "config": {}, "secrets": {"api_key": UPSTREAM_KEY},
              "model": "test-model"}
    values.update(overrides)
    return ConnectionSettings(**values)


@pytest.mark.parametrize("provider,model", [("openai_compatible", "test-model"),
                                            ("openai_compatible", "test-embedding"),
                                            ("anthropic", "claude-haiku-4-5")])
def test_a_hanging_upstream_ends_a_connection_test_as_a_timeout(upstream, provider, model):
    upstream.set_mode("hang")
    base = upstream.anthropic_url if provider == "anthropic" else upstream.openai_url
    outcome = test_connection(settings_for(upstream, provider=provider, base_url=base,
                                           model=model), timeout=1)
    assert (outcome.ok, outcome.error_class) == (False, "timeout")


def test_an_endless_answer_to_a_test_call_is_cut_at_the_size_cap(upstream):
    upstream.set_mode("endless")
    outcome = test_connection(settings_for(upstream), timeout=10)
    assert (outcome.ok, outcome.error_class) == (False, "provider_error")
    assert "sent more than 1024 KiB" in outcome.message


def test_an_endless_models_listing_is_cut_at_the_size_cap(upstream):
    from providers.errors import ProviderError

    upstream.set_mode("endless")
    with pytest.raises(ProviderError) as caught:
        list_models(settings_for(upstream), timeout=10)
    assert caught.value.error_class == "provider_error"
    assert "sent more than 16384 KiB" in caught.value.message


def test_a_trickling_answer_is_cut_at_the_test_deadline(upstream):
    upstream.set_mode("endless", delay_ms=100)  # a few bytes now and then: no read times out
    outcome = test_connection(settings_for(upstream), timeout=1)
    assert (outcome.ok, outcome.error_class) == (False, "timeout")


@pytest.mark.django_db
def test_a_connection_test_through_the_api_against_a_hanging_upstream_fails_as_timeout(
        staff_client, upstream, monkeypatch, django_capture_on_commit_callbacks):
    from connections import diagnostics
    from connections.models import ConnectionTest
    from tests.factories import ConnectionFactory

    monkeypatch.setattr(diagnostics, "TEST_TIMEOUT_S", 1)
    conn = ConnectionFactory(base_url=upstream.openai_url, secrets={"api_key": UPSTREAM_KEY})
    upstream.set_mode("hang")
    with django_capture_on_commit_callbacks(execute=True):
        r = staff_client.post(f"/api/v1/connections/{conn.pk}/test/")
    assert r.status_code == 202
    test = ConnectionTest.objects.get(pk=r.json()["id"])
    assert (test.status, test.error_class) == ("failed", "timeout")


# The gateway (providers/forward.py) bounds a call by one deadline for the whole exchange
# (LLMCONN_PROVIDER_TIMEOUT or the connection's timeout) and a non-streamed answer by a size cap.
# The upstream gives up after 6 s: a call bounded by us ends long before, with our error.


@pytest.fixture
def gateway_key(upstream, make_connection, make_workspace, make_key, settings):
    settings.LLMCONN_PROVIDER_TIMEOUT = 1
    upstream.hang_s = 6  # the upstream gives up after 6 s: a bounded call ends long before
    workspace = make_workspace("endless", chat=make_connection(upstream))
    return make_key(workspace)


@pytest.mark.django_db
def test_gateway_call_to_a_hanging_upstream_is_a_504(upstream, gateway_key, gateway):
    upstream.set_mode("hang")
    r = gateway.post("/v1/chat/completions", gateway_key,
                     {"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "provider_timeout"


@pytest.mark.parametrize("delay_ms,status,code", [(0, 502, "provider_response_too_large"),
                                                  (5, 504, "provider_timeout")])
@pytest.mark.django_db
def test_gateway_call_to_an_endless_upstream_ends_at_the_size_cap_or_the_deadline(
        upstream, gateway_key, gateway, delay_ms, status, code, settings):
    if status == 502:  # reading 32 MiB from the in-process upstream takes ~1 s on 2 busy cores
        settings.LLMCONN_PROVIDER_TIMEOUT = 5
    upstream.set_mode("endless", delay_ms=delay_ms)
    r = gateway.post("/v1/chat/completions", gateway_key,
                     {"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


@pytest.mark.django_db
def test_gateway_stream_from_an_endless_upstream_ends_at_the_deadline(upstream, gateway_key,
                                                                      gateway, settings):
    # A stream that keeps producing runs up to LLMCONN_STREAM_MAX_SECONDS (contract "Time"),
    # however short the per-silence timeout.
    settings.LLMCONN_STREAM_MAX_SECONDS = 2
    upstream.set_mode("endless", delay_ms=50)
    r, chunks = gateway.stream("/v1/chat/completions", gateway_key,
                               {"model": "chat", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert "provider_timeout" in chunks[-1]
