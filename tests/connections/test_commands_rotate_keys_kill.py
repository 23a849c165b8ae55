"""rotate_keys killed for real (SIGKILL after its first committed batch), then run again.

Runs manage.py in subprocesses on a throw-away SQLite file, so the kill is a real one.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "old-key-kill-test", "new-key-kill-test"
ROWS = 3000


def _env(tmp_path, keys):
    env = dict(os.environ)
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", FERNET_KEYS=",".join(keys),
               SECRET_KEY="kill-test-secret-key-0123456789abcdef", DEBUG="false",
               LLMCONN_VAR_DIR=str(tmp_path), AUDIT_HMAC_KEY="kill-test-hmac",
               DJANGO_SETTINGS_MODULE="llmconn.settings")
    env.pop("REDIS_URL", None)
    return env


def _manage(tmp_path, keys, *args, check=True):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True,
                          text=True, env=_env(tmp_path, keys), check=check, timeout=120)


SEED = f"""
from connections.models import Connection
Connection.objects.bulk_create([Connection(name=f"c{{i}}", provider="openai", auth_method="api_key",
    secrets={{"api_key": f"sk-kill-{{i:05d}}-abcdefgh"}}, secret_hints={{}}) for i in range({ROWS})],
    batch_size=500)
"""

CHECK = """
from connections.models import Connection
from connections.fields import UNREADABLE
bad = [c.name for c in Connection.objects.all()
       if c.secrets is UNREADABLE or c.secrets["api_key"] != f"sk-kill-{int(c.name[1:]):05d}-abcdefgh"]
print("BAD", len(bad), "TOTAL", Connection.objects.count())
"""


def test_rotation_killed_mid_run_then_rerun_finishes(tmp_path):
    _manage(tmp_path, [OLD], "migrate", "-v0")
    _manage(tmp_path, [OLD], "shell", "-c", SEED)

    proc = subprocess.Popen([sys.executable, "manage.py", "rotate_keys", "--batch-size", "25"],
                            cwd=ROOT, env=_env(tmp_path, [NEW, OLD]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the progress line of the first committed batch
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert "25/" in first

    # Every row is readable with [new, old] after the kill.
    assert f"BAD 0 TOTAL {ROWS}" in _manage(tmp_path, [NEW, OLD], "shell", "-c", CHECK).stdout

    rerun = _manage(tmp_path, [NEW, OLD], "rotate_keys", "--batch-size", "25")
    assert "Verified" in rerun.stdout
    again = _manage(tmp_path, [NEW], "rotate_keys")
    assert "Re-encrypted 0 value(s); fixed the key id of 0" in again.stdout
    assert f"BAD 0 TOTAL {ROWS}" in _manage(tmp_path, [NEW], "shell", "-c", CHECK).stdout
    assert "intact" in _manage(tmp_path, [NEW], "verify_audit").stdout
