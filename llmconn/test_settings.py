"""Settings for the test suite: production settings with fixed test keys.

DATABASE_URL / REDIS_URL from the environment are honoured (CI points them at PostgreSQL and
Redis); without them tests use SQLite and eager Celery. Tasks are always eager in the test
process; tests that need a real worker start one (celery.contrib.testing).
"""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789")
# A fixed test key (not a real one), separate from SECRET_KEY as production requires.
os.environ.setdefault("FERNET_KEYS", "test-fernet-key-primary")
# The audit chain's key, separate from both (production requires all three).
os.environ.setdefault("AUDIT_HMAC_KEY", "test-audit-hmac-key-not-for-production")
os.environ.setdefault("LLMCONN_EGRESS_ALLOW", "127.0.0.0/8,::1")
# Tests of throttling set the rates they test; the rest of the suite must not hit them.
os.environ.setdefault("LLMCONN_THROTTLE_TESTS", "10000/min")
os.environ.setdefault("LLMCONN_THROTTLE_GATEWAY", "100000/min")
os.environ.setdefault("LLMCONN_VAR_DIR", os.path.join(os.path.dirname(__file__), "..", "var", "test"))

from .settings import *  # noqa: E402,F403

WHITENOISE_AUTOREFRESH = True  # no collectstatic in tests
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests only
CELERY_TASK_ALWAYS_EAGER = True
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
LOGGING["root"]["level"] = "DEBUG"  # noqa: F405  (tests capture logs to prove no secret is in them)
LOGGING["loggers"]["faker"] = {"level": "INFO"}  # noqa: F405
LOGGING["loggers"]["factory"] = {"level": "INFO"}  # noqa: F405
