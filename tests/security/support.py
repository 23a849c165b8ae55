"""Helpers of the adversarial suite: an app served by uvicorn in a subprocess with production
settings (DEBUG off) and the environment a test chooses (e.g. REDIS_URL or DATABASE_URL
pointing at a closed port), and scanning helpers for the canary."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.upstream import free_port

ROOT = Path(__file__).resolve().parents[2]

BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "llmconn.settings",  # production settings, not the test ones
    "DEBUG": "false",
    "SECRET_KEY": "security-suite-secret-key-0123456789abcdefghijkl",
    "FERNET_KEYS": "security-suite-fernet-key",
    "AUDIT_HMAC_KEY": "security-suite-audit-hmac-key",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "LLMCONN_EGRESS_ALLOW": "127.0.0.0/8",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "LOG_LEVEL": "DEBUG",
    "LITELLM_LOG_LEVEL": "DEBUG",
}

SETUP_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_user("admin", "a@example.com", "pw-admin-12345",
                                            is_staff=True, is_superuser=True)
print(Token.objects.create(user=user).key)
"""


def closed_port_url(scheme: str, path: str = "") -> str:
    return f"{scheme}://127.0.0.1:{free_port()}{path}"


def app_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a served app: BASE_ENV, a fresh SQLite database, the overrides."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(BASE_ENV)
    env["LLMCONN_VAR_DIR"] = str(tmp_path)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    env.update(overrides)
    return env


def prepare_database(env: dict[str, str]) -> str:
    """Migrate the served app's database and create a staff user; returns its API token."""
    result = subprocess.run([sys.executable, "-c", SETUP_SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


@contextmanager
def served_app(env: dict[str, str], log_path: Path):
    """uvicorn serving llmconn.asgi with `env`; yields its base URL."""
    port = free_port()
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "llmconn.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "debug"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def slices(secret: str, size: int = 12) -> list[str]:
    """Every `size`-character slice of a secret (what a partial leak would show)."""
    if len(secret) <= size:
        return [secret]
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def leaks(text: str, secrets) -> list[str]:
    """The secrets (or 12-character slices of them) found in `text`."""
    found = []
    for secret in secrets:
        if any(piece in text for piece in slices(secret)):
            found.append(secret)
    return found
