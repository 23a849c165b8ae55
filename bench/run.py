"""llmconn benchmarks: `make bench` (or `.venv/bin/python bench/run.py [NAME ...] [--quick]`).

Each benchmark starts what it needs on 127.0.0.1 and stops it afterwards:
- `gateway`: the bench upstream (bench/upstream.py), llmconn under uvicorn (uvloop + httptools,
  one worker, PostgreSQL + Redis) and LiteLLM's proxy (installed into bench/.venv-litellm by
  this script, one worker, no database); /v1/chat/completions direct vs through each, measured
  by bench/loadgen.py in its own process. Also start-up time and memory of both servers.
- `sweep`: the health sweep (connections.diagnostics.connection_health_sweep, what the Celery
  task runs) over 1,000 active connections against an upstream that takes 200 ms per call.
- `rotation`: `manage.py rotate_keys` over 100,000 encrypted connection rows.
- `listing`: GET /api/v1/connections/ (first page) with 10,000 connections, and its queries.
- `outbound`: the cost of HTTPS to the provider (providers/transport.py): the same /v1 calls
  (c=1 non-streamed, first streamed chunk, c=32) through llmconn to the bench upstream over
  http and over https (a trustme private CA in the connection's `config.ca_cert`).
- `resolution` (not in the default set): 10,000 workspaces bound to one connection, each with
  its own API key (created by workspace_bulk_create, timed), called round-robin by key: one key,
  cold first pass, warm, with an unrelated connection and then the connection they all use
  edited once a second, a cold call vs a warm one at c=1, the worker's memory, then
  move-bindings over all the bindings.

PostgreSQL and Redis: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/bench,
created if missing) and BENCH_REDIS_URL (default redis://127.0.0.1:6379/12). The bench database
is emptied and refilled by the benchmarks: never point it at real data.
Results: a table on stdout and a section appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
LITELLM_VERSION = "1.106.2"
LITELLM_VENV = BENCH / ".venv-litellm"
RESULTS = BENCH / "RESULTS.md"
UPSTREAM_KEY = "bench-upstream-key-0001"
LITELLM_MASTER_KEY = "sk-bench-master-0001"
CHAT_BODY = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")

ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "llmconn.settings",
    "DEBUG": "false",
    "SECRET_KEY": "bench-secret-key-not-for-production-0123456789abcdef",
    "FERNET_KEYS": "bench-fernet-key-one",
    "AUDIT_HMAC_KEY": "bench-audit-hmac-key-not-for-production",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "LLMCONN_EGRESS_ALLOW": "127.0.0.0/8,::1",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "LOG_LEVEL": "WARNING",
    # The per-key gateway throttle stays on (its cost is measured) with a limit never reached.
    "LLMCONN_THROTTLE_GATEWAY": "100000000/min",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": str(ROOT),
}

_PROCESSES: list[subprocess.Popen] = []


# --- processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], *, env=None, log: str) -> subprocess.Popen:
    out = open(Path(tempfile.gettempdir()) / f"llmconn-bench-{log}.log", "wb")
    process = subprocess.Popen(cmd, cwd=ROOT, env=env or ENV, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    _PROCESSES.append(process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process in _PROCESSES:
        _PROCESSES.remove(process)


def stop_all() -> None:
    for process in list(_PROCESSES):
        stop(process)


def wait_http(url: str, *, process: subprocess.Popen, timeout: float = 120,
              headers: dict | None = None, interval: float = 0.02) -> float:
    """Poll `url` until it answers 200; return the monotonic time it did."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
            try:
                if client.get(url, headers=headers).status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(interval)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB)."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                             text=True).stdout.split()
        pids += [int(p) for p in out]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def loadgen(url: str, *, body: dict | None, headers: list[str], concurrency: int,
            duration: float = 0, stream: bool = False, method: str = "POST",
            keys_file: str = "", requests: int = 0, warmup: int = 100) -> dict:
    cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "--method", method,
           "--concurrency", str(concurrency), "--duration", str(duration),
           "--warmup", str(warmup)]
    if keys_file:
        cmd += ["--keys-file", keys_file]
    if requests:
        cmd += ["--requests", str(requests)]
    if body is not None:
        cmd += ["--body", json.dumps(body)]
    for h in headers:
        cmd += ["--header", h]
    if stream:
        cmd.append("--stream")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         timeout=duration + 120 + requests / 20)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- services: PostgreSQL, Redis, the Django project --------------------------------------------

def ensure_services() -> None:
    import psycopg
    import redis

    from urllib.parse import urlsplit

    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        sys.exit(f"PostgreSQL is not reachable at {admin} ({exc}). Start it, or set "
                 "BENCH_DATABASE_URL.")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis is not reachable at {REDIS_URL} ({exc}). Start it, or set "
                 "BENCH_REDIS_URL.")
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=ENV,
                   check=True)


_django_ready = False


def django_setup() -> None:
    global _django_ready
    if not _django_ready:
        os.environ.update({k: v for k, v in ENV.items() if k != "PYTHONPATH"})
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        _django_ready = True


def empty_tables() -> None:
    """Remove what earlier runs left (the bench database only)."""
    django_setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND (
              tablename LIKE 'connections\\_%' OR tablename LIKE 'workspaces\\_%'
              OR tablename LIKE 'audit\\_%')""")
        tables = [row[0] for row in cursor.fetchall()]
        if tables:
            cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
    from django.core.cache import cache

    cache.clear()


# --- LiteLLM proxy ------------------------------------------------------------------------------

def ensure_litellm() -> Path:
    """bench/.venv-litellm with litellm[proxy]==1.106.2 (never a project dependency)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / f".installed-{LITELLM_VERSION}"
    if not stamp.exists():
        print(f"Installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} ...", flush=True)
        subprocess.run([PY, "-m", "venv", "--clear", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet",
                        f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
        stamp.touch()
    return binary


def litellm_config(upstream_url: str) -> Path:
    path = Path(tempfile.gettempdir()) / "llmconn-bench-litellm.yaml"
    path.write_text(f"""model_list:
  - model_name: chat
    litellm_params:
      model: openai/bench-model
      api_base: {upstream_url}
      api_key: {UPSTREAM_KEY}
general_settings:
  master_key: {LITELLM_MASTER_KEY}
litellm_settings:
  telemetry: false
""")
    return path


# --- benchmarks ---------------------------------------------------------------------------------

def seed_gateway(upstream_url: str) -> str:
    """One connection to the upstream, one workspace bound to it; returns its API key."""
    django_setup()
    from connections.services import connection_create
    from workspaces.services import api_key_create, workspace_create

    empty_tables()
    conn = connection_create(name="bench-upstream", provider="openai_compatible",
                             auth_method="api_key", base_url=upstream_url,
                             default_model="bench-model", credentials={"api_key": UPSTREAM_KEY})
    workspace = workspace_create(name="Bench", bindings={"chat": {"connection": str(conn.pk)}})
    return api_key_create(workspace=workspace, name="bench")[1]


def bench_gateway(results: dict, *, duration: float) -> None:
    up_port, ours_port, lite_port = free_port(), free_port(), free_port()
    upstream = start([PY, str(BENCH / "upstream.py"), "--port", str(up_port), "--key",
                      UPSTREAM_KEY, "--chunks", "8", "--chunk-interval-ms", "2"], log="upstream")
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    wait_http(f"{upstream_url}/models", process=upstream)
    key = seed_gateway(upstream_url)

    # llmconn: launch → first answer, memory
    launched = time.monotonic()
    ours = start([PY, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
                  "--port", str(ours_port), "--loop", "uvloop", "--http", "httptools",
                  "--no-access-log", "--log-level", "warning"], log="llmconn")
    ready = wait_http(f"http://127.0.0.1:{ours_port}/healthz", process=ours)
    results["startup_llmconn_s"] = round(ready - launched, 2)
    auth = [f"Authorization: Bearer {key}"]
    first = loadgen(f"http://127.0.0.1:{ours_port}/v1/chat/completions", body=CHAT_BODY,
                    headers=auth, concurrency=1, duration=0.2)
    if first["errors"]:
        raise RuntimeError(f"llmconn gateway answers errors: {first}; see "
                           f"{tempfile.gettempdir()}/llmconn-bench-llmconn.log")
    results["rss_idle_llmconn_mb"] = rss_mb(ours.pid)

    litellm_bin = ensure_litellm()
    lite_env = {k: v for k, v in ENV.items() if k not in ("DATABASE_URL", "REDIS_URL",
                                                          "DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    launched = time.monotonic()
    lite = start([str(litellm_bin), "--config", str(litellm_config(upstream_url)), "--host",
                  "127.0.0.1", "--port", str(lite_port), "--num_workers", "1"],
                 env=lite_env, log="litellm")
    ready = wait_http(f"http://127.0.0.1:{lite_port}/health/liveliness", process=lite,
                      timeout=180)
    results["startup_litellm_s"] = round(ready - launched, 2)
    lite_auth = [f"Authorization: Bearer {LITELLM_MASTER_KEY}"]
    first = loadgen(f"http://127.0.0.1:{lite_port}/v1/chat/completions", body=CHAT_BODY,
                    headers=lite_auth, concurrency=1, duration=0.2)
    if first["errors"]:
        raise RuntimeError(f"LiteLLM proxy answers errors: {first}")
    results["rss_idle_litellm_mb"] = rss_mb(lite.pid)

    targets = {
        "direct": (f"{upstream_url}/chat/completions", [f"Authorization: Bearer {UPSTREAM_KEY}"],
                   {**CHAT_BODY, "model": "bench-model"}),
        "llmconn": (f"http://127.0.0.1:{ours_port}/v1/chat/completions", auth, CHAT_BODY),
        "litellm": (f"http://127.0.0.1:{lite_port}/v1/chat/completions", lite_auth, CHAT_BODY),
    }
    for name, (url, headers, body) in targets.items():
        print(f"  gateway: {name} ...", flush=True)
        results[f"c1_{name}"] = loadgen(url, body=body, headers=headers, concurrency=1,
                                        duration=duration)
        results[f"c32_{name}"] = loadgen(url, body=body, headers=headers, concurrency=32,
                                         duration=duration)
        results[f"stream_{name}"] = loadgen(url, body={**body, "stream": True}, headers=headers,
                                            concurrency=1, duration=duration, stream=True)
    results["rss_load_llmconn_mb"] = rss_mb(ours.pid)
    results["rss_load_litellm_mb"] = rss_mb(lite.pid)
    for process in (lite, ours, upstream):
        stop(process)


def bench_outbound(results: dict, *, duration: float) -> None:
    """llmconn → bench upstream over http and over https (private CA in config.ca_cert)."""
    import trustme

    ca = trustme.CA()
    pem = Path(tempfile.mkdtemp()) / "upstream.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    http_port, https_port, ours_port = free_port(), free_port(), free_port()
    common = ["--key", UPSTREAM_KEY, "--chunks", "8", "--chunk-interval-ms", "2"]
    plain = start([PY, str(BENCH / "upstream.py"), "--port", str(http_port), *common],
                  log="upstream-http")
    tls = start([PY, str(BENCH / "upstream.py"), "--port", str(https_port), "--tls-pem",
                 str(pem), *common], log="upstream-https")
    wait_http(f"http://127.0.0.1:{http_port}/v1/models", process=plain)
    time.sleep(1.0)  # (the https one: started alike)
    django_setup()
    from connections.services import connection_create
    from workspaces.services import api_key_create, workspace_create

    empty_tables()
    keys = {}
    for name, url, config in (
            ("http", f"http://127.0.0.1:{http_port}/v1", {}),
            ("https", f"https://localhost:{https_port}/v1",
             {"ca_cert": ca.cert_pem.bytes().decode()})):
        conn = connection_create(name=f"bench-{name}", provider="openai_compatible",
                                 auth_method="api_key", base_url=url, config=config,
                                 default_model="bench-model",
                                 credentials={"api_key": UPSTREAM_KEY})
        workspace = workspace_create(name=f"Bench {name}",
                                     bindings={"chat": {"connection": str(conn.pk)}})
        keys[name] = api_key_create(workspace=workspace, name="bench")[1]
    ours = start([PY, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
                  "--port", str(ours_port), "--loop", "uvloop", "--http", "httptools",
                  "--no-access-log", "--log-level", "warning"], log="llmconn-outbound")
    wait_http(f"http://127.0.0.1:{ours_port}/healthz", process=ours)
    url = f"http://127.0.0.1:{ours_port}/v1/chat/completions"
    direct = f"http://127.0.0.1:{http_port}/v1/chat/completions"
    direct_auth = [f"Authorization: Bearer {UPSTREAM_KEY}"]
    out = {"direct_c1": loadgen(direct, body={**CHAT_BODY, "model": "bench-model"},
                                headers=direct_auth, concurrency=1, duration=duration),
           "direct_stream": loadgen(direct, body={**CHAT_BODY, "model": "bench-model",
                                                  "stream": True},
                                    headers=direct_auth, concurrency=1, duration=duration,
                                    stream=True)}
    for name, key in keys.items():
        auth = [f"Authorization: Bearer {key}"]
        first = loadgen(url, body=CHAT_BODY, headers=auth, concurrency=1, duration=0.2)
        if first["errors"]:
            raise RuntimeError(f"llmconn over {name} answers errors: {first}")
        out[f"{name}_c1"] = loadgen(url, body=CHAT_BODY, headers=auth, concurrency=1,
                                    duration=duration)
        out[f"{name}_stream"] = loadgen(url, body={**CHAT_BODY, "stream": True}, headers=auth,
                                        concurrency=1, duration=duration, stream=True)
        out[f"{name}_c32"] = loadgen(url, body=CHAT_BODY, headers=auth, concurrency=32,
                                     duration=duration)
    results["outbound"] = out
    for process in (ours, tls, plain):
        stop(process)


def bench_sweep(results: dict, *, connections: int = 1000, delay_ms: int = 200) -> None:
    up_port = free_port()
    upstream = start([PY, str(BENCH / "upstream.py"), "--port", str(up_port), "--key",
                      UPSTREAM_KEY, "--delay-ms", str(delay_ms)], log="sweep-upstream")
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    wait_http(f"{upstream_url}/models", process=upstream)
    django_setup()
    empty_tables()
    from connections.crypto import keyring  # noqa: F401 - fail early on a key problem
    from connections.models import Connection

    template = Connection(name="x", provider="openai_compatible", auth_method="api_key",
                          base_url=upstream_url, default_model="bench-model",
                          secrets={"api_key": UPSTREAM_KEY})
    from connections.secrets import make_hint

    rows = []
    for i in range(connections):
        rows.append(Connection(
            name=f"sweep-{i:05d}", provider=template.provider, auth_method=template.auth_method,
            base_url=upstream_url, default_model="bench-model", is_active=True,
            secrets={"api_key": UPSTREAM_KEY}, secret_hints={"api_key": make_hint(UPSTREAM_KEY)}))
    Connection.objects.bulk_create(rows, batch_size=1000)
    script = (
        "import django, time, resource, json; django.setup();"
        "from connections.diagnostics import connection_health_sweep;"
        "t = time.perf_counter(); rows = connection_health_sweep();"
        "wall = time.perf_counter() - t;"
        "ok = sum(1 for r in rows if r.status == 'succeeded');"
        "print(json.dumps({'wall_s': round(wall, 2), 'tested': len(rows), 'ok': ok,"
        " 'rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))"
    )
    out = subprocess.run([PY, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=600)
    stop(upstream)
    if out.returncode != 0:
        raise RuntimeError(f"sweep failed: {out.stderr[-3000:]}")
    results["sweep"] = {**json.loads(out.stdout.strip().splitlines()[-1]),
                        "connections": connections, "delay_ms": delay_ms}


def bench_rotation(results: dict, *, rows: int = 100_000) -> None:
    """rotate_keys over `rows` connections encrypted with the old key."""
    django_setup()
    empty_tables()
    from django.db import connection

    from connections.crypto import keyring
    from connections.models import Connection

    # Encrypt one secrets payload per distinct value with the current key, then COPY the rows
    # in: building 100,000 model instances through the ORM would take longer than rotating.
    field = Connection._meta.get_field("secrets")
    ring = keyring()
    print(f"  rotation: writing {rows:,} rows ...", flush=True)
    sample = Connection(name="sample", provider="openai_compatible", auth_method="api_key",
                        base_url="http://127.0.0.1:9/v1", default_model="m",
                        secrets={"api_key": "sk-rotation-0001"})
    columns = [f for f in Connection._meta.concrete_fields]
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        values = {}
        for f in columns:
            if f.primary_key:
                continue
            values[f.column] = f.get_db_prep_save(f.pre_save(sample, True), connection)
        names = [c for c in values]
        copy_sql = (f'COPY "{Connection._meta.db_table}" ("id", '
                    + ", ".join(f'"{c}"' for c in names) + ") FROM STDIN")
        import uuid

        raw = cursor.cursor if hasattr(cursor, "cursor") else cursor
        with raw.copy(copy_sql) as copy:
            for i in range(rows):
                row = dict(values)
                row["name"] = f"rot-{i:06d}"
                # a distinct token per row, as real rows have (same plaintext, fresh IV)
                row[field.column] = field.get_db_prep_save({"api_key": f"sk-rotation-{i:06d}"},
                                                           connection)
                copy.write_row([uuid.uuid4(), *(row[c] for c in names)])
    results_write = time.perf_counter() - t0
    del ring
    env = {**ENV, "FERNET_KEYS": "bench-fernet-key-two," + ENV["FERNET_KEYS"]}
    t0 = time.perf_counter()
    out = subprocess.run([PY, "manage.py", "rotate_keys"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"rotate_keys failed: {out.stdout[-1500:]} {out.stderr[-1500:]}")
    results["rotation"] = {"rows": rows, "wall_s": round(wall, 2),
                           "rows_per_s": round(rows / wall), "seed_s": round(results_write, 1),
                           "output": out.stdout.strip().splitlines()[-1:] }


def bench_listing(results: dict, *, rows: int = 10_000, duration: float = 5) -> None:
    django_setup()
    empty_tables()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from connections.models import Connection
    from connections.secrets import make_hint

    objs = [Connection(name=f"list-{i:05d}", provider="openai_compatible", auth_method="api_key",
                       base_url="https://api.example.com/v1", default_model="m",
                       secrets={"api_key": f"sk-list-{i:06d}"},
                       secret_hints={"api_key": make_hint(f"sk-list-{i:06d}")})
            for i in range(rows)]
    Connection.objects.bulk_create(objs, batch_size=2000)
    User = get_user_model()
    user, _ = User.objects.get_or_create(username="bench-admin",
                                         defaults={"is_staff": True, "is_superuser": True})
    token, _ = Token.objects.get_or_create(user=user)

    # query count, in-process
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/api/v1/connections/", HTTP_HOST="127.0.0.1")
    assert response.status_code == 200, response.content[:500]
    queries = len(ctx.captured_queries)
    reset_queries()

    port = free_port()
    server = start([PY, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
                    "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                    "--no-access-log", "--log-level", "warning"], log="listing")
    wait_http(f"http://127.0.0.1:{port}/healthz", process=server)
    result = loadgen(f"http://127.0.0.1:{port}/api/v1/connections/", body=None, method="GET",
                     headers=[f"Authorization: Token {token.key}", "Accept: application/json"],
                     concurrency=1, duration=duration)
    stop(server)
    results["listing"] = {"rows": rows, "queries": queries, "p50_ms": result["p50_ms"],
                          "p99_ms": result["p99_ms"], "rps": result["rps"],
                          "errors": result["errors"]}


def _keys_file(keys: list[str], name: str) -> str:
    path = Path(tempfile.gettempdir()) / f"llmconn-bench-keys-{name}.txt"
    path.write_text("\n".join(keys) + "\n")
    path.chmod(0o600)
    return str(path)


class _Editor:
    """Edits one connection once a second (as an admin at work) in a thread of this process,
    through the service (so the scopes are bumped as in production)."""

    def __init__(self, connection_id):
        import threading

        self.connection_id, self.edits = connection_id, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connection as db

        from connections.models import Connection
        from connections.services import connection_update

        while not self._stop.wait(1.0):
            conn = Connection.objects.get(pk=self.connection_id)
            connection_update(connection=conn, timeout_seconds=60 + self.edits % 2)
            self.edits += 1
        db.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_resolution(results: dict, *, workspaces: int = 10_000, duration: float = 10,
                     concurrency: int = 32, cold_c1: int = 1000) -> None:
    """Resolution at scale (#23): N workspaces, each bound to the same connection with its own
    API key, called round-robin by key; bulk creation and move-bindings timed in-process."""
    django_setup()
    empty_tables()
    from connections.services import connection_create, connection_move_bindings
    from workspaces.services import workspace_bulk_create

    up_port, port = free_port(), free_port()
    upstream = start([PY, str(BENCH / "upstream.py"), "--port", str(up_port), "--key",
                      UPSTREAM_KEY], log="resolution-upstream")
    upstream_url = f"http://127.0.0.1:{up_port}/v1"
    wait_http(f"{upstream_url}/models", process=upstream)
    settings = dict(provider="openai_compatible", auth_method="api_key", base_url=upstream_url,
                    default_model="bench-model", credentials={"api_key": UPSTREAM_KEY})
    used = connection_create(name="bench-used", **settings)
    unrelated = connection_create(name="bench-unrelated", **settings)
    items = [{"name": f"bench-{i:05d}", "bindings": {"chat": {"connection": str(used.pk)}},
              "api_keys": ["bench"]} for i in range(workspaces)]
    t0 = time.perf_counter()
    created = workspace_bulk_create(items=items)
    create_s = time.perf_counter() - t0
    keys = [raws[0] for _, raws in created]
    r = results["resolution"] = {"workspaces": workspaces, "create_s": round(create_s, 2),
                                 "create_per_s": round(workspaces / create_s, 1)}

    server = start([PY, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
                    "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                    "--no-access-log", "--log-level", "warning"], log="resolution")
    wait_http(f"http://127.0.0.1:{port}/healthz", process=server)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    r["rss_start_mb"] = rss_mb(server.pid)

    def run(name, keys_file, **kw):
        print(f"  resolution: {name} ...", flush=True)
        kw.setdefault("concurrency", concurrency)
        out = loadgen(url, body=CHAT_BODY, headers=[], keys_file=keys_file, **kw)
        r[name] = out
        return out

    # c=1: a cold call (unknown key, unresolved workspace) vs the same calls warm
    c1_keys = _keys_file(keys[:cold_c1], "c1")
    run("cold_c1", c1_keys, concurrency=1, requests=cold_c1, warmup=-1)
    run("warm_c1", c1_keys, concurrency=1, requests=cold_c1, warmup=-1)
    # c=32: one key; the first pass over the other keys (cold); warm; with edits
    run("one_key", _keys_file(keys[:1], "one"), duration=duration, warmup=200)
    rest = keys[cold_c1:]
    if rest:
        run("cold_pass", _keys_file(rest, "rest"), requests=len(rest), warmup=-1)
    all_keys = _keys_file(keys, "all")
    run("warm", all_keys, duration=duration, warmup=-1)
    r["rss_warm_mb"] = rss_mb(server.pid)
    with _Editor(unrelated.pk) as editor:
        run("edit_unrelated", all_keys, duration=duration, warmup=-1)
    r["edit_unrelated"]["edits"] = editor.edits
    with _Editor(used.pk) as editor:
        run("edit_used", all_keys, duration=duration, warmup=-1)
    r["edit_used"]["edits"] = editor.edits
    run("after_edits", all_keys, duration=duration, warmup=-1)
    r["rss_end_mb"] = rss_mb(server.pid)
    stop(server)
    stop(upstream)

    t0 = time.perf_counter()
    moved = connection_move_bindings(source=used, target=unrelated)
    r["move_bindings_s"] = round(time.perf_counter() - t0, 2)
    r["moved_bindings"] = moved["moved_bindings"]


# --- report -------------------------------------------------------------------------------------

def machine() -> dict:
    load = os.getloadavg()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "load": [round(x, 2) for x in load], "python": platform.python_version(),
            "kernel": platform.release()}


def versions() -> dict:
    from importlib.metadata import version

    out = {}
    for name in ("django", "uvicorn", "uvloop", "httptools", "httpx", "psycopg", "litellm"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = "?"
    out["litellm proxy"] = LITELLM_VERSION
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip()
    except OSError:
        out["commit"] = "?"
    return out


def _f(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict) -> tuple[str, list[tuple[str, bool]]]:
    """Markdown table plus (target, met) pairs."""
    lines = ["| measurement | direct | llmconn | LiteLLM proxy | llmconn / LiteLLM | target | met |",
             "|---|---:|---:|---:|---:|---|---|"]
    verdicts: list[tuple[str, bool]] = []

    def row(name, direct, ours, lite, ratio, target, met):
        lines.append(f"| {name} | {_f(direct)} | {_f(ours)} | {_f(lite)} | {_f(ratio)} | "
                     f"{target} | {'' if met is None else ('yes' if met else '**no**')} |")
        if met is not None:
            verdicts.append((f"{name}: {target}", met))

    if "c1_llmconn" in results:
        d, o, lt = results["c1_direct"], results["c1_llmconn"], results["c1_litellm"]
        added_o, added_l = o["p50_ms"] - d["p50_ms"], lt["p50_ms"] - d["p50_ms"]
        row("p50 latency, c=1 (ms)", d["p50_ms"], o["p50_ms"], lt["p50_ms"],
            o["p50_ms"] / lt["p50_ms"], "", None)
        row("p99 latency, c=1 (ms)", d["p99_ms"], o["p99_ms"], lt["p99_ms"],
            o["p99_ms"] / lt["p99_ms"], "", None)
        row("added p50, c=1 (ms)", 0.0, added_o, added_l, added_o / added_l if added_l else None,
            "≤ 1.5 ms and ≤ 0.33× LiteLLM", added_o <= 1.5 and added_l > 0
            and added_o <= added_l / 3)
        d, o, lt = results["c32_direct"], results["c32_llmconn"], results["c32_litellm"]
        row("p50 latency, c=32 (ms)", d["p50_ms"], o["p50_ms"], lt["p50_ms"],
            o["p50_ms"] / lt["p50_ms"], "", None)
        row("p99 latency, c=32 (ms)", d["p99_ms"], o["p99_ms"], lt["p99_ms"],
            o["p99_ms"] / lt["p99_ms"], "", None)
        row("requests/s, c=32, 1 worker", d["rps"], o["rps"], lt["rps"], o["rps"] / lt["rps"],
            "≥ 10× LiteLLM", o["rps"] >= 10 * lt["rps"])
        row("errors (c=1 + c=32 + stream)", sum(results[f"{k}_direct"]["errors"] for k in ("c1", "c32", "stream")),
            sum(results[f"{k}_llmconn"]["errors"] for k in ("c1", "c32", "stream")),
            sum(results[f"{k}_litellm"]["errors"] for k in ("c1", "c32", "stream")), None, "", None)
        d, o, lt = results["stream_direct"], results["stream_llmconn"], results["stream_litellm"]
        row("stream: first chunk p50 (ms)", d["ttfc_p50_ms"], o["ttfc_p50_ms"], lt["ttfc_p50_ms"],
            o["ttfc_p50_ms"] / lt["ttfc_p50_ms"], "", None)
        added = o["ttfc_p50_ms"] - d["ttfc_p50_ms"]
        row("stream: added to first chunk p50 (ms)", 0.0, added, lt["ttfc_p50_ms"] - d["ttfc_p50_ms"],
            None, "≤ 1.5 ms", added <= 1.5)
        row("stream: total p50 (ms)", d["p50_ms"], o["p50_ms"], lt["p50_ms"],
            o["p50_ms"] / lt["p50_ms"], "", None)
        row("launch → first answer (s)", None, results["startup_llmconn_s"],
            results["startup_litellm_s"],
            results["startup_llmconn_s"] / results["startup_litellm_s"], "< 3 s",
            results["startup_llmconn_s"] < 3)
        row("RSS idle (MB)", None, results["rss_idle_llmconn_mb"], results["rss_idle_litellm_mb"],
            results["rss_idle_llmconn_mb"] / results["rss_idle_litellm_mb"], "≤ 0.5× LiteLLM",
            results["rss_idle_llmconn_mb"] <= results["rss_idle_litellm_mb"] / 2)
        row("RSS after load (MB)", None, results["rss_load_llmconn_mb"],
            results["rss_load_litellm_mb"],
            results["rss_load_llmconn_mb"] / results["rss_load_litellm_mb"], "≤ 0.5× LiteLLM",
            results["rss_load_llmconn_mb"] <= results["rss_load_litellm_mb"] / 2)
    if "sweep" in results:
        s = results["sweep"]
        row(f"health sweep: {s['connections']} connections × {s['delay_ms']} ms (s)", None,
            s["wall_s"], None, None, "< 5 s", s["wall_s"] < 5 and s["ok"] == s["connections"])
        row("health sweep: ok / tested", None, f"{s['ok']} / {s['tested']}", None, None, "", None)
        row("health sweep: worker peak RSS (MB)", None, s["rss_mb"], None, None, "", None)
    if "outbound" in results:
        b = results["outbound"]
        dc1, dst = b["direct_c1"]["p50_ms"], b["direct_stream"]["ttfc_p50_ms"]
        for name in ("http", "https"):
            c1, st, c32 = b[f"{name}_c1"], b[f"{name}_stream"], b[f"{name}_c32"]
            row(f"llmconn → upstream over {name}: added p50, c=1 (ms)", dc1, c1["p50_ms"] - dc1,
                None, None, "≤ 1.5 ms", c1["p50_ms"] - dc1 <= 1.5)
            row(f"llmconn → upstream over {name}: added to first chunk p50 (ms)", dst,
                st["ttfc_p50_ms"] - dst, None, None, "≤ 1.5 ms", st["ttfc_p50_ms"] - dst <= 1.5)
            row(f"llmconn → upstream over {name}: requests/s, c=32", None, c32["rps"], None,
                None, "", None)
            row(f"llmconn → upstream over {name}: errors", None,
                c1["errors"] + st["errors"] + c32["errors"], None, None, "", None)
    if "rotation" in results:
        r = results["rotation"]
        row(f"rotate_keys: {r['rows']:,} rows (rows/s)", None, r["rows_per_s"], None, None,
            "≥ 5,000 rows/s", r["rows_per_s"] >= 5000)
    if "listing" in results:
        li = results["listing"]
        row(f"GET /api/v1/connections/ with {li['rows']:,} rows, p50 (ms)", None, li["p50_ms"],
            None, None, "< 30 ms", li["p50_ms"] < 30 and not li["errors"])
        row("  … queries per page", None, li["queries"], None, None, "constant", None)
    if "resolution" in results:
        r = results["resolution"]
        n = f"{r['workspaces']:,}"
        one = r["one_key"]["rps"]

        def share(name, target):
            if name not in r:
                return
            rps = r[name]["rps"]
            label = {"cold_pass": f"{n} workspaces, cold first pass",
                     "warm": f"{n} workspaces, warm",
                     "edit_unrelated": f"{n} workspaces, unrelated connection edited 1/s",
                     "edit_used": f"{n} workspaces, the connection all use edited 1/s",
                     "after_edits": f"{n} workspaces, after the edits"}[name]
            row(f"{label}: requests/s (× one key)", None, f"{rps} ({rps / one:.2f})", None,
                None, f"≥ {target:.0%} of one key" if target else "",
                None if not target else rps >= target * one and not r[name]["errors"])

        row("one key, c=32: requests/s", None, one, None, None, "", None)
        share("warm", 0.9)
        share("edit_unrelated", 0.9)
        share("edit_used", 0.5)
        share("cold_pass", 0.5)
        share("after_edits", None)
        added = r["cold_c1"]["p50_ms"] - r["warm_c1"]["p50_ms"]
        row("cold call vs warm, c=1: p50 added (ms)", None,
            f"{_f(added)} ({r['cold_c1']['p50_ms']} vs {r['warm_c1']['p50_ms']})", None, None,
            "≤ 1.5 ms", added <= 1.5)
        row(f"web worker RSS, {n} warm workspaces (MB)", None,
            f"{r['rss_warm_mb']} (start {r['rss_start_mb']})", None, None, "report", None)
        row(f"workspace_bulk_create: {n} with binding + key (per s)", None, r["create_per_s"],
            None, None, "≥ 500/s", r["create_per_s"] >= 500)
        row(f"move-bindings: {r['moved_bindings']:,} bindings, one transaction (s)", None,
            r["move_bindings_s"], None, None, "< 2 s",
            r["move_bindings_s"] < 2 if r["moved_bindings"] >= 10_000 else None)
        errors = sum(r[k]["errors"] for k in r if isinstance(r[k], dict) and "errors" in r[k])
        row("errors (all resolution runs)", None, errors, None, None, "0", errors == 0)
    return "\n".join(lines), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description="llmconn benchmarks")
    parser.add_argument("names", nargs="*", default=["gateway", "sweep", "rotation", "listing"])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--note", default="", help="a sentence recorded with the results")
    parser.add_argument("--workspaces", type=int, default=0,
                        help="resolution: how many workspaces (default 10,000; 2,000 --quick)")
    args = parser.parse_args()

    before = machine()
    print(f"machine: {before}", flush=True)
    ensure_services()
    results: dict = {}
    duration = 3.0 if args.quick else 10.0
    try:
        for name in args.names:
            print(f"{name} ...", flush=True)
            t0 = time.perf_counter()
            if name == "gateway":
                bench_gateway(results, duration=duration)
            elif name == "outbound":
                bench_outbound(results, duration=duration)
            elif name == "sweep":
                bench_sweep(results, connections=200 if args.quick else 1000)
            elif name == "rotation":
                bench_rotation(results, rows=10_000 if args.quick else 100_000)
            elif name == "resolution":
                bench_resolution(results, workspaces=args.workspaces or (
                    2_000 if args.quick else 10_000), duration=duration,
                    cold_c1=min(1000, (args.workspaces or 10_000) // 2))
            elif name == "listing":
                bench_listing(results, rows=2_000 if args.quick else 10_000,
                              duration=2 if args.quick else 5)
            else:
                sys.exit(f"unknown benchmark {name!r}")
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        stop_all()
    after = machine()
    text, verdicts = table(results)
    print()
    print(text)
    missed = [name for name, met in verdicts if not met]
    print()
    print("all targets met" if not missed else "NOT met: " + "; ".join(missed))
    (ROOT / "var").mkdir(exist_ok=True)
    (ROOT / "var" / "bench-last-results.json").write_text(json.dumps(results, indent=1))
    if not args.no_record:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        v = versions()
        header = (f"\n## {stamp}{' (quick)' if args.quick else ''}\n\n"
                  f"Machine: {before['nproc']} CPUs, {before['memory_gb']} GB, Python "
                  f"{before['python']}, kernel {before['kernel']}; load average before "
                  f"{before['load']}, after {after['load']}"
                  f"{' (**taken under load**: other processes shared the CPUs)' if max(before['load'][0], after['load'][0]) > 0.7 else ''}.\n"
                  f"Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".\n"
                  f"Benchmarks: {', '.join(args.names)}.{(' ' + args.note) if args.note else ''}\n\n")
        footer = ("\n\n" + ("All targets met." if not missed else
                            "Not met: " + "; ".join(missed) + ".") + "\n")
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by `make bench` (bench/run.py); "
                               "newest last.\n")
        with RESULTS.open("a") as fh:
            fh.write(header + text + footer)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
