"""Settings for llmconn, all read from the environment (and `.env`) with django-environ.

Embedded defaults make a first run work with nothing installed but Python: SQLite under
`var/`, Celery eager (no broker), local-memory cache, and, only with DEBUG on, a development
SECRET_KEY and Fernet key generated into `var/`. Production values that are missing stop
start-up with ImproperlyConfigured naming the variable to set.
See https://docs.djangoproject.com/en/5.2/ref/settings/ and docs/settings.md.
"""

import os
import sys
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# litellm fetches its price map and Hugging Face tokenizers from the internet at import unless
# told not to; a hanging network would block every process that imports it (STACK-NOTES.md).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LLMCONN_VAR_DIR", BASE_DIR / "var"))

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)


def _dev_secret(filename: str, make) -> str:
    """Read (or create once) a development-only secret under var/ and say so on stderr."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
        print(
            f"WARNING: generated a development key in {path}. It is for DEBUG only; "
            "set SECRET_KEY, FERNET_KEYS and AUDIT_HMAC_KEY in the environment for production.",
            file=sys.stderr,
        )
    return path.read_text().strip()


def _make_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _make_secret_key() -> str:
    from django.core.management.utils import get_random_secret_key

    return get_random_secret_key()


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set the SECRET_KEY environment variable to a long random "
            "string (or set DEBUG=true for a development key)."
        )
    SECRET_KEY = _dev_secret("secret_key", _make_secret_key)

# Comma-separated: the first key encrypts, every key decrypts (MultiFernet).
FERNET_KEYS = env.list("FERNET_KEYS", default=[])
if not FERNET_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FERNET_KEYS is not set. Set FERNET_KEYS to one or more comma-separated encryption "
            "keys (generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'), separate from SECRET_KEY."
        )
    FERNET_KEYS = [_dev_secret("fernet.key", _make_fernet_key)]
if SECRET_KEY in FERNET_KEYS:
    raise ImproperlyConfigured(
        "FERNET_KEYS must not contain SECRET_KEY: use a separate encryption key, so that "
        "rotating one does not expose or lose the other."
    )

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Hosts/CIDRs that connections may reach although private (loopback, RFC 1918...).
LLMCONN_EGRESS_ALLOW = env.list("LLMCONN_EGRESS_ALLOW", default=[])

# Addresses (IPs or CIDRs) that may scrape GET /metrics without signing in (a Prometheus
# server); staff sessions and tokens may always. Empty: staff only.
LLMCONN_METRICS_ALLOW = env.list("LLMCONN_METRICS_ALLOW", default=[])
# Off: /v1 calls are not instrumented (for measuring what metrics cost, bench/metrics.py).
LLMCONN_METRICS_ENABLED = env.bool("LLMCONN_METRICS_ENABLED", default=True)
# With PROMETHEUS_MULTIPROC_DIR: other services' sample directories that /metrics adds up too
# (the Celery worker's, on a volume shared with the web service; see docker-compose.yml).
LLMCONN_METRICS_EXTRA_DIRS = env.list("LLMCONN_METRICS_EXTRA_DIRS", default=[])
# Distinct values each metric label keeps per process; later ones are counted as "other".
LLMCONN_METRICS_MAX_LABEL_VALUES = env.int("LLMCONN_METRICS_MAX_LABEL_VALUES", default=500)

# Key of the audit chain and of the audit log's secret fingerprints (HMAC-SHA256), separate
# from SECRET_KEY and FERNET_KEYS: whoever can write the database but lacks this key cannot
# rewrite the chain unnoticed. Required in production; a development key under var/ with DEBUG.
AUDIT_HMAC_KEY = env.str("AUDIT_HMAC_KEY", default="")
if not AUDIT_HMAC_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "AUDIT_HMAC_KEY is not set. Set AUDIT_HMAC_KEY to a long random string, separate "
            "from SECRET_KEY and FERNET_KEYS (generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'); keep it: the audit chain is verified with it."
        )
    AUDIT_HMAC_KEY = _dev_secret("audit_hmac.key", _make_secret_key)
if AUDIT_HMAC_KEY == SECRET_KEY or AUDIT_HMAC_KEY in FERNET_KEYS:
    raise ImproperlyConfigured(
        "AUDIT_HMAC_KEY must differ from SECRET_KEY and from every key in FERNET_KEYS."
    )
# How long a replaced provider secret stays available for rollback-secret.
LLMCONN_SECRET_ROLLBACK_HOURS = env.int("LLMCONN_SECRET_ROLLBACK_HOURS", default=24)
# Rate limits on the shared cache (llmconn/throttling.py), "N/s|min|hour|day"; empty: none.
# Requests that start a connection test or model discovery, per user:
LLMCONN_THROTTLE_TESTS = env.str("LLMCONN_THROTTLE_TESTS", default="30/min")
# Calls to /v1/chat/completions and /v1/embeddings, per workspace API key:
LLMCONN_THROTTLE_GATEWAY = env.str("LLMCONN_THROTTLE_GATEWAY", default="6000/min")
# How many connections the periodic health sweep tests at once (asyncio, inside one task):
# 1,000 connections behind a 200 ms provider take a few seconds at 200 (bench/RESULTS.md).
LLMCONN_SWEEP_CONCURRENCY = env.int("LLMCONN_SWEEP_CONCURRENCY", default=200)
# Gateway calls: seconds before a provider call counts as a timeout (and the binding's next
# fallback is tried), unless the connection sets its own `timeout_seconds`.
LLMCONN_PROVIDER_TIMEOUT = env.int("LLMCONN_PROVIDER_TIMEOUT", default=60)
# Any signed-in user may hold personal connections (README "People and defaults"); false: 403.
LLMCONN_PERSONAL_CONNECTIONS = env.bool("LLMCONN_PERSONAL_CONNECTIONS", default=True)
# That timeout bounds the connect, the first byte and every silence of a stream; a stream that
# keeps producing runs up to this many seconds in all (providers/transport.py).
LLMCONN_STREAM_MAX_SECONDS = env.int("LLMCONN_STREAM_MAX_SECONDS", default=3600)
# Largest /v1 request body (one chat message with images can be tens of MB); above: 413.
LLMCONN_MAX_REQUEST_BYTES = env.int("LLMCONN_MAX_REQUEST_BYTES", default=32 * 1024 * 1024)
# The GIL switch interval of a web server process, set by llmconn.asgi when the server starts
# it (ASGI lifespan startup: uvicorn, gunicorn's uvicorn workers), never on import. A /v1 call
# hands work from the event loop thread to the sync thread and back; with CPython's default
# 5 ms interval each hand-off can wait that long under load (bench/RESULTS.md). 0 keeps
# Python's default.
LLMCONN_GIL_SWITCH_INTERVAL = env.float("LLMCONN_GIL_SWITCH_INTERVAL", default=0.0005)
# The garbage collector of a web server process, also set at its startup: the objects loaded
# by then (Django, litellm: about a million) are frozen out of the collector's passes
# (gc.freeze), and the young generation is collected every LLMCONN_GC_THRESHOLD allocations
# instead of Python's 700 (gen0,gen1,gen2 as gc.set_threshold takes them). Measured on the
# warm /v1 path: the collector's passes over that heap were a fifth of the CPU of a call
# (bench/RESULTS.md). Empty keeps Python's thresholds (the freeze is always done).
LLMCONN_GC_THRESHOLD = env.str("LLMCONN_GC_THRESHOLD", default="20000,50,100").strip()
if LLMCONN_GC_THRESHOLD:
    try:
        _gc = tuple(int(v) for v in LLMCONN_GC_THRESHOLD.split(","))
    except ValueError:
        _gc = ()
    if len(_gc) != 3 or min(_gc) < 1:
        raise ImproperlyConfigured(
            f"LLMCONN_GC_THRESHOLD={LLMCONN_GC_THRESHOLD!r} is not three positive integers "
            "separated by commas (gen0,gen1,gen2, e.g. 20000,50,100); leave it empty to keep "
            "Python's defaults.")
    LLMCONN_GC_THRESHOLD = _gc

INSTALLED_APPS = [
    "llmconn.apps.LlmconnAdminConfig",  # django.contrib.admin with the index order of llmconn
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served as our own static files
    "django_celery_beat",
    "providers",
    "connections",
    "workspaces",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.AuditContextMiddleware",
    "llmconn.outage.DatabaseOutageMiddleware",  # a database outage is a 503, not a 500
]

ROOT_URLCONF = "llmconn.urls"
WSGI_APPLICATION = "llmconn.wsgi.application"
ASGI_APPLICATION = "llmconn.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "llmconn" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'llmconn.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] != ":memory:":
        Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL and IMMEDIATE transactions let the web process and eager tasks write without
    # "database is locked" (https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
elif env.bool("DB_POOL", default=False):
    # psycopg's connection pool (https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool):
    # under ASGI each request's sync code runs in a new thread, which would otherwise open a new
    # PostgreSQL connection per request. llmconn/asgi.py turns it on for web processes; Celery
    # workers and commands keep plain connections (a pool must not be inherited across fork).
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them
    # The pool checks a connection before handing it out (one empty query): after a database
    # restart its idle connections are dead, and none of them reaches a request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": env.int("DB_POOL_TIMEOUT", default=10),
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Usage rows (workspaces/services.py usage_records_create) go through a second alias of the
    # same database whose sessions commit without waiting for the WAL flush: a PostgreSQL crash
    # may lose the last fraction of a second of them, nothing is corrupted, and nothing else is
    # written that way (https://www.postgresql.org/docs/current/wal-async-commit.html). A plain
    # connection kept by its thread, not the pool: while the database is down a write fails at
    # once (and the row goes to the spool, workspaces/usage_spool.py) instead of waiting for the
    # pool's timeout, and a broken one is closed at its first failure.
    _usage = {k: v for k, v in DATABASES["default"].items() if k not in ("OPTIONS", "TEST")}
    _options = {k: v for k, v in DATABASES["default"].get("OPTIONS", {}).items() if k != "pool"}
    _options["options"] = (_options.get("options", "") + " -c synchronous_commit=off").strip()
    _options.setdefault("connect_timeout", 5)
    DATABASES["usage"] = {**_usage, "OPTIONS": _options, "CONN_MAX_AGE": None,
                          "CONN_HEALTH_CHECKS": False, "TEST": {"MIRROR": "default"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmconn",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery (https://docs.celeryq.dev/en/stable/userguide/configuration.html), read by
# llmconn/celery.py with namespace CELERY. JSON only: the broker and result backend are not
# encrypted stores, and tasks carry ids, never secrets.
# "memory://localhost/": with no host kombu logs "No hostname was supplied" (eager mode).
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "max_retries": 1}
# Sending a task subscribes to its result on Redis; Celery's default retries that for 20 s
# when Redis is down, which would hold a "test connection" request that long before its 503.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                     "interval_max": 0.5},
}
# The worker logs through LOGGING above (request ids, redaction, LOG_FORMAT), not a root
# logger set up by Celery.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["llmconn.formats"]  # one date format in the admin (llmconn/formats/en)
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    # Token first: DRF answers an anonymous request with the first class's WWW-Authenticate,
    # so anonymous gets 401 (Session has none, which would make it a 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Deny by default: each view opens up explicitly.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PARSER_CLASSES": [
        "llmconn.parsers.SafeJSONParser",  # deeply nested JSON is a 400, not a 500
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "llmconn.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "llmconn.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "llmconn API",
    "DESCRIPTION": "Keep, test and use LLM provider connections.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Schema and docs for signed-in users only (llmconn/docs.py); Swagger UI from our own
    # static files, never a CDN.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # One name for the chat/embeddings choice (provider capabilities, a test's endpoint).
    "ENUM_NAME_OVERRIDES": {"CapabilityEnum": ["chat", "embeddings"]},
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# LOG_FORMAT: "plain" (default) or "json" (one object per line, for log shippers). Each line
# carries the request id of its /v1 call or connection test ("-" outside one).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "llmconn.logs.RequestIdFilter"},
                "redact": {"()": "llmconn.redaction.RedactingFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {"()": "llmconn.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT,
                             "filters": ["request_id", "redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # litellm logs request bodies and headers at DEBUG; keep it quiet unless asked.
        "LiteLLM": {"level": env.str("LITELLM_LOG_LEVEL", default="WARNING")},
        "httpx": {"level": "WARNING"},
    },
}
