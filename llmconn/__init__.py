"""llmconn: keep, test and use LLM provider connections."""

# Redact secrets from every log record of every process (web, worker, commands, tests), and
# give each the request id of its unit of work.
from .logs import install as _install_logging

_install_logging()

# Load the Celery app whenever Django starts so that @shared_task binds to it.
from .celery import app as celery_app

__all__ = ("celery_app",)
