"""Start-up refuses production without the keys it needs, and says which variable to set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in {"SECRET_KEY", "FERNET_KEYS", "AUDIT_HMAC_KEY", "DEBUG",
                        "DJANGO_SETTINGS_MODULE"}}
    env.update(env_overrides)
    env["DJANGO_SETTINGS_MODULE"] = "llmconn.settings"
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("missing,present", [
    ("FERNET_KEYS", {"SECRET_KEY": "a-production-secret-key-0123456789abcdef",
                     "AUDIT_HMAC_KEY": "a-production-audit-key"}),
    ("SECRET_KEY", {"FERNET_KEYS": "a-production-fernet-key",
                    "AUDIT_HMAC_KEY": "a-production-audit-key"}),
])
def test_production_start_without_a_key_stops_naming_the_variable(missing, present):
    result = _start({"DEBUG": "false", **present})
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr


def test_fernet_keys_equal_to_secret_key_is_refused():
    result = _start({"DEBUG": "false", "SECRET_KEY": "same-value-0123456789",
                     "FERNET_KEYS": "same-value-0123456789", "AUDIT_HMAC_KEY": "audit-key"})
    assert result.returncode != 0
    assert "FERNET_KEYS must not contain SECRET_KEY" in result.stderr


def test_production_start_with_both_keys_passes_checks():
    result = _start({"DEBUG": "false", "SECRET_KEY": "a-production-secret-key-0123456789abcdef",
                     "FERNET_KEYS": "a-production-fernet-key",
                     "AUDIT_HMAC_KEY": "a-production-audit-key"})
    assert result.returncode == 0, result.stderr
