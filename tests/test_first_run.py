"""`make run` as a new user meets it: a fresh var/ (SQLite, eager Celery, no Redis), the output
ending with a framed block (URL, username, password or how to reset it), quiet logs, `/` sent
to the admin. The Makefile's own recipe runs (make -o keeps it from reinstalling the venv)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_run(var_dir: Path, port: int, **env) -> tuple[str, dict]:
    """Start `make run`, wait for its framed block, fetch `/`, stop it; (output, answers)."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "DEBUG",
                            "SECRET_KEY", "FERNET_KEYS", "LLMCONN_ADMIN_PASSWORD")}
    environ.update(LLMCONN_VAR_DIR=str(var_dir),
                   DATABASE_URL=f"sqlite:///{var_dir}/llmconn.sqlite3", **env)
    proc = subprocess.Popen(
        ["make", "-s", "-o", ".venv/.installed", "run", f"PORT={port}"], cwd=ROOT, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    answers = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Ctrl-C stops it" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        time.sleep(0.5)  # anything logged right after the block would show up now
        root = httpx.get(f"http://127.0.0.1:{port}/")
        answers["root"] = (root.status_code, root.headers.get("location"))
        answers["api"] = httpx.get(f"http://127.0.0.1:{port}/api/v1/nothing/").json()
        time.sleep(0.3)
        answers["before_stop"] = "".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        reader.join(5)
    return "".join(lines), answers


def _block(output: str) -> list[str]:
    """The framed block's inner lines, and a check that nothing but access logs follow it."""
    rows = output.splitlines()
    end = max(i for i, r in enumerate(rows) if re.fullmatch(r"#{10,}", r))
    start = max(i for i, r in enumerate(rows[:end]) if re.fullmatch(r"#{10,}", r))
    return [r.strip("# ").rstrip() for r in rows[start + 1:end]], rows[end + 1:]


def test_make_run_ends_with_the_login_block_and_keeps_quiet(tmp_path):
    port = _free_port()
    output, answers = _make_run(tmp_path, port)
    inner, after = _block(answers["before_stop"])
    assert inner[0] == f"llmconn is running: http://127.0.0.1:{port}/admin/"
    assert "username: admin" in inner
    password = next(r for r in inner if r.startswith("password: ")).split(": ", 1)[1]
    assert len(password) >= 12
    assert any("make admin-password" in r for r in inner)
    # Only the log lines of our two requests follow the block.
    assert all('"GET /' in r or "Not Found: /api/v1/nothing/" in r for r in after), after
    for noise in ("No hostname was supplied", "lifespan", "Traceback", "Operations to perform"):
        assert noise not in output, output
    assert answers["root"] == (302, "/admin/")
    assert answers["api"]["error"]["code"] == "not_found"

    # The password shown works; a second run keeps it and says how to reset it instead.
    rerun, answers = _make_run(tmp_path, port)
    inner, _ = _block(answers["before_stop"])
    assert password not in rerun
    assert "password: unchanged (the one shown on the first run)" in inner
    assert any("make admin-password" in r for r in inner)
    check = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "shell", "-c",
         "from django.contrib.auth import authenticate as a; "
         f"print(bool(a(username='admin', password={password!r})))"],
        cwd=ROOT, capture_output=True, text=True, env={
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL",
                                                                  "DJANGO_SETTINGS_MODULE")},
            "DEBUG": "true", "LLMCONN_VAR_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path}/llmconn.sqlite3"})
    assert check.stdout.strip().endswith("True"), check.stderr


def test_a_test_queued_without_redis_logs_no_kombu_warning(tmp_path):
    """Eager Celery (no REDIS_URL): queueing a connection test used to log kombu's "No hostname
    was supplied" (broker URL "memory://" has no host)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY",
                        "FERNET_KEYS")}
    env.update(DEBUG="true", LLMCONN_VAR_DIR=str(tmp_path),
               DATABASE_URL=f"sqlite:///{tmp_path}/llmconn.sqlite3")
    python = str(ROOT / ".venv/bin/python")
    subprocess.run([python, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    probe = (
        "from django.test import Client\n"
        "from django.contrib.auth import get_user_model\n"
        "u = get_user_model().objects.create_superuser('x', '', 'pw-x-123456')\n"
        "c = Client(HTTP_HOST='127.0.0.1'); c.force_login(u)\n"
        "r = c.post('/api/v1/connection-tests/', {'provider': 'openai_compatible',"
        " 'auth_method': 'none', 'base_url': 'http://127.0.0.1:9/v1'},"
        " content_type='application/json')\n"
        "print('status', r.status_code)\n")
    done = subprocess.run([python, "manage.py", "shell", "-c", probe], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "status 202" in output and "connection_test_run" in output, output
    assert "No hostname was supplied" not in output, output
