"""Fixtures for workspace tests: connections to the fake upstream, workspaces, API keys, an
in-process gateway client, and a live ASGI server (uvicorn subprocess) for the SDK tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection as db_connection

from connections.services import connection_create
from tests.asgi_client import AsgiClient
from tests.conftest import UPSTREAM_KEY
from workspaces import budgets, resolution, services
from workspaces.gateway import planning as gateway_planning
from workspaces.keys import _KEYS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_resolution_cache():
    """IDs are reused between tests (rolled-back sequences): start every test cold."""
    resolution.clear_local_cache()
    budgets.clear_local_cache()
    _KEYS.clear()
    services._TOUCHED.clear()
    services._TOUCH_QUEUE.clear()
    services._TOUCH_FLUSHED[0] = 0.0
    yield
    resolution.clear_local_cache()
    budgets.clear_local_cache()
    _KEYS.clear()


@pytest.fixture
def make_connection(db):
    """make_connection(upstream, name=..., key=..., anthropic=False, **kw) → saved Connection."""
    counter = [0]

    def make(up, *, name=None, key=UPSTREAM_KEY, anthropic=False, **kwargs):
        counter[0] += 1
        if anthropic:
            kwargs.setdefault("provider", "anthropic")
            kwargs.setdefault("base_url", up.anthropic_url)
            kwargs.setdefault("default_model", "claude-haiku-4-5")
        else:
            kwargs.setdefault("provider", "openai_compatible")
            kwargs.setdefault("base_url", up.openai_url)
            kwargs.setdefault("default_model", "test-model")
        kwargs.setdefault("auth_method", "api_key")
        credentials = {"api_key": key} if kwargs["auth_method"] == "api_key" else {}
        return connection_create(name=name or f"{up.name}-conn-{counter[0]}",
                                 credentials=credentials, **kwargs)

    return make


@pytest.fixture
def make_workspace(db):
    """make_workspace(name, chat=conn, embedding=conn, ...) → Workspace with those bindings."""

    def make(name, **roles):
        bindings = {}
        for role, value in roles.items():
            if isinstance(value, tuple):
                conn, model = value
            else:
                conn, model = value, None
            bindings[role] = {"connection": str(conn.pk) if conn else None, "model": model}
        return services.workspace_create(name=name, bindings=bindings or None)

    return make


@pytest.fixture
def make_key(db):
    """make_key(workspace) → the raw `lck_...` key."""

    def make(workspace, name="test"):
        return services.api_key_create(workspace=workspace, name=name)[1]

    return make


class Gateway:
    """Calls the /v1 endpoints in-process through `llmconn.asgi.application`, the production
    entry point (tests/asgi_client.py)."""

    def __init__(self):
        self.client = AsgiClient()

    def _call(self, method, path, key, body, headers):
        if key:
            headers["Authorization"] = f"Bearer {key}"

        async def run():
            if method == "GET":
                response = await self.client.get(path, headers=headers)
            else:
                response = await self.client.post(
                    path, data=body if isinstance(body, bytes) else json.dumps(
                        body if body is not None else {}), headers=headers)
            await response.aread()
            return response

        return async_to_sync(run)()

    def post(self, path, key=None, body=None, **headers):
        return self._call("POST", path, key, body, headers)

    def post_raw(self, path, raw: bytes, key=None, **headers):
        """POST `raw` bytes as the body, as they are (malformed JSON and the like)."""
        return self._call("POST", path, key, raw, headers)

    def get(self, path, key=None, **headers):
        return self._call("GET", path, key, None, headers)

    def stream(self, path, key, body):
        """POST a streaming request; returns (response, [decoded SSE data payloads])."""

        async def run():
            response = await self.client.post(
                path, data=json.dumps(body), headers={"Authorization": f"Bearer {key}"})
            raw = await response.aread()
            if not response.streaming:
                return response, []
            return response, [line[6:] for line in raw.decode().split("\n\n")
                              if line.startswith("data: ")]

        return async_to_sync(run)()


@pytest.fixture
def no_sync_context(monkeypatch):
    """Counts the gateway calls that took the sync path (not the warm one)."""
    taken = []
    original = gateway_planning._context_sync

    async def counting(*args):
        taken.append(args)
        return await original(*args)

    monkeypatch.setattr(gateway_planning, "_context_sync", counting)
    return taken


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


# --- a live server in another process ---------------------------------------------------------

def _database_url() -> str:
    s = db_connection.settings_dict
    auth = s["USER"] or ""
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def start_server(log_path: Path, port: int) -> subprocess.Popen:
    """uvicorn serving llmconn.asgi against the test database and the same cache."""
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "llmconn.test_settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    })
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "info", "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("uvicorn did not start within 60 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _require_postgres() -> None:
    if db_connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://...): the uvicorn process "
                    "must share the test database (SQLite's test database is in memory)")


def require_shared_cache() -> None:
    """Skip unless the cache is Redis: cross-process invalidation goes through it."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL): another process sees changes through the "
                    "shared revision stamp in the cache")


@pytest.fixture(scope="module")
def gateway_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """(base URL, log path) of the app served by uvicorn in a subprocess, for a whole module.

    Tests using it also need `transactional_db`, so that the rows they create are committed
    and visible to the server process.
    """
    _require_postgres()
    from tests.upstream import free_port

    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    process = start_server(log_path, port)
    try:
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        stop_server(process)
