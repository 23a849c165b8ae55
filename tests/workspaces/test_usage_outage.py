"""Nothing lost when PostgreSQL or Redis blips under load (issue 22).

A real PostgreSQL is stopped and started again while /v1 calls keep coming: a throwaway
cluster this module creates with initdb and runs with pg_ctl on a spare port (as the postgres
user when the tests run as root: initdb refuses root), never the machine's own server. Redis
is a throwaway redis-server on a spare port too, so that one test can stop it. The app is
served by uvicorn in a subprocess with production settings (DB_POOL on, as llmconn.asgi sets).

After the burst and the spool's drain: usage rows == answers with status 200, no request id
twice, and no traceback in the app's log once the database is back.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.security.support import app_env, served_app
from tests.upstream import free_port

pytestmark = pytest.mark.postgres

SETUP_SCRIPT = """
import sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from connections.services import connection_create
from workspaces import services
conn = connection_create(name="primary", provider="openai_compatible", auth_method="api_key",
                         base_url=sys.argv[1], default_model="test-model",
                         credentials={"api_key": sys.argv[2]})
ws = services.workspace_create(name="Outage", bindings={"chat": {"connection": str(conn.pk)}})
print(services.api_key_create(workspace=ws, name="load")[1])
"""

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) to run a "
                    "throwaway cluster")
    return Path(found[-1]).parent


class Cluster:
    """A throwaway PostgreSQL cluster on a spare port, in a temporary directory."""

    def __init__(self):
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="llmconn-pg-"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/app"

    def run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                 "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
                       f"-c unix_socket_directories={self.root} -c fsync=off", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def usage(self) -> tuple[int, int, int]:
        """(rows, distinct request ids + attempts, rows without a request id)."""
        with psycopg.connect(self.url.replace("postgres://", "postgresql://")) as conn:
            return conn.execute(
                "SELECT count(*), count(DISTINCT (request_id, attempt)), "
                "count(*) FILTER (WHERE request_id IS NULL) FROM workspaces_usagerecord"
            ).fetchone()


class RedisServer:
    """A throwaway redis-server on a spare port (no persistence)."""

    def __init__(self, root: Path):
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            pytest.skip("needs redis-server to run a throwaway Redis")
        self.root, self.port, self.process = root, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def cluster():
    pg = Cluster()
    try:
        pg.init()
    except subprocess.CalledProcessError as exc:
        pg.destroy()
        pytest.fail(f"throwaway PostgreSQL did not start: {exc.stderr.decode()[-1000:]}")
    yield pg
    pg.destroy()


@pytest.fixture
def app(cluster, upstream, tmp_path):
    """(base URL, API key, log path, Redis server, var dir) of the app on the cluster."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    env = app_env(tmp_path, DATABASE_URL=cluster.url, REDIS_URL=redis_server.url,
                  LOG_LEVEL="INFO", LITELLM_LOG_LEVEL="WARNING")
    with psycopg.connect(cluster.url.replace("postgres://", "postgresql://"),
                         autocommit=True) as conn:  # each test starts with no usage rows
        if conn.execute("SELECT to_regclass('workspaces_usagerecord')").fetchone()[0]:
            conn.execute("DELETE FROM workspaces_usagerecord")
    result = subprocess.run([sys.executable, "-c", SETUP_SCRIPT, upstream.openai_url,
                             UPSTREAM_KEY], cwd=Path(__file__).resolve().parents[2], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    key = result.stdout.strip().splitlines()[-1]
    log = tmp_path / "uvicorn.log"
    try:
        with served_app(env, log) as base:
            yield base, key, log, redis_server, tmp_path
    finally:
        redis_server.stop()
        with psycopg.connect(cluster.url.replace("postgres://", "postgresql://"),
                             autocommit=True) as conn:  # the next test sets up its own
            conn.execute("TRUNCATE workspaces_usagerecord, workspaces_workspace, "
                         "connections_connection CASCADE")


async def _burst(base: str, key: str, seconds: float, during, concurrency: int = 8):
    """Calls from `concurrency` clients for `seconds`; `during()` runs in a thread meanwhile.
    Returns ({status: count} (0 for a transport error), [(sent at, status)])."""
    statuses: dict[int, int] = {}
    calls: list[tuple[float, int]] = []
    stop = time.monotonic() + seconds

    async def client():
        async with httpx.AsyncClient(base_url=base, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as http:
            while time.monotonic() < stop:
                sent = time.monotonic()
                try:
                    status = (await http.post("/v1/chat/completions", json=CHAT)).status_code
                except httpx.HTTPError:
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
                calls.append((sent, status))

    await asyncio.gather(*[client() for _ in range(concurrency)], asyncio.to_thread(during))
    return statuses, calls


def _failures_after(calls, back_at: float, grace: float) -> list[tuple[float, int]]:
    """Calls sent more than `grace` seconds after the database was back that did not answer
    200: a run of failures after recovery (a broken connection kept, a pool backing off)."""
    return [(round(sent - back_at, 2), status) for sent, status in calls
            if sent > back_at + grace and status != 200]


def _wait_for_rows(cluster: Cluster, expected: int, seconds: float = 20) -> tuple[int, int, int]:
    deadline = time.monotonic() + seconds
    while True:
        counts = cluster.usage()
        if counts[0] >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def _log_after(log: Path, marker: str) -> str:
    text = log.read_text(errors="replace")
    return text[text.find(marker):] if marker in text else text


def _mark(base: str, name: str) -> None:
    """A line in the app's log (an unknown /v1 path is logged by uvicorn) to split it."""
    httpx.get(f"{base}/v1/__{name}__", timeout=10)


def test_postgres_restarted_during_a_burst_loses_no_usage_row(cluster, app):
    base, key, log, _, var_dir = app
    for _ in range(3):  # warm: the key and the resolution are in the process's caches
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200

    back = []

    def blip():
        time.sleep(1.0)
        cluster.stop()
        time.sleep(1.5)
        cluster.start()
        back.append(time.monotonic())

    statuses, calls = asyncio.run(_burst(base, key, 5.0, blip))
    _mark(base, "recovered")
    answered = statuses.get(200, 0) + 3
    rows, distinct, without_id = _wait_for_rows(cluster, answered)
    assert statuses.get(200, 0) > 50, statuses
    assert rows == answered, (statuses, rows)
    assert distinct == rows and without_id == 0  # no row twice, each with its request id
    assert statuses.get(200, 0) == sum(statuses.values()), statuses  # the warm path needs no DB
    text = log.read_text(errors="replace")
    assert "kept in the spool (redis)" in text  # the outage really hit the usage writes
    after = _log_after(log, "__recovered__")
    assert "Traceback" not in after, after[-3000:]
    assert not list((var_dir / "usage-spool").glob("*.jsonl"))


def test_redis_stopped_while_postgres_blips_spools_to_a_file_and_loses_no_row(cluster, app):
    base, key, log, redis_server, var_dir = app
    for _ in range(3):
        assert httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200

    back = []

    def blip():
        time.sleep(0.7)
        redis_server.stop()
        time.sleep(0.5)
        cluster.stop()
        time.sleep(1.5)
        cluster.start()
        back.append(time.monotonic())

    statuses, calls = asyncio.run(_burst(base, key, 5.5, blip))
    _mark(base, "recovered")
    answered = statuses.get(200, 0) + 3
    rows, distinct, without_id = _wait_for_rows(cluster, answered)
    assert statuses.get(200, 0) > 20, statuses
    assert rows == answered, (statuses, rows)
    assert distinct == rows and without_id == 0
    # With the cache down every call reads the database: those during the outage are 503s,
    # those after it are answered (the sync thread's broken connection and the pool recover).
    assert set(statuses) <= {200, 503}, statuses
    assert not _failures_after(calls, back[0], grace=1.0), _failures_after(calls, back[0], 1.0)
    text = log.read_text(errors="replace")
    assert "kept in the spool (file)" in text or "kept in /" in text
    after = _log_after(log, "__recovered__")
    assert "Traceback" not in after, after[-3000:]
    assert not list((var_dir / "usage-spool").glob("*.jsonl"))
