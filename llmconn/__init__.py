"""llmconn: keep, test and use LLM provider connections."""

# Redact secrets from every log record of every process (web, worker, commands, tests).
from .redaction import install as _install_redaction

_install_redaction()

# Load the Celery app whenever Django starts so that @shared_task binds to it.
from .celery import app as celery_app

__all__ = ("celery_app",)
