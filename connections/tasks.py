"""Celery tasks of connections: thin wrappers that take ids, call a service and own time limits.

Arguments are ids only and results are small dicts without secrets: the broker and the result
backend are not encrypted stores. Each service is safe to run twice (it checks the row's state
first), so a redelivered message does no harm.
https://docs.celeryq.dev/en/stable/userguide/tasks.html#tips-and-best-practices
"""

from __future__ import annotations

from contextlib import contextmanager

from celery import shared_task

from llmconn.tracing import new_request_id, reset_request_id, set_request_id

from . import diagnostics


@contextmanager
def _request_id(value: str):
    """Log lines of the task carry `value` as their request id (llmconn.tracing)."""
    token = set_request_id(value)
    try:
        yield
    finally:
        reset_request_id(token)


def _summary(test) -> dict | None:
    if test is None:
        return None
    return {"id": str(test.pk), "status": test.status, "error_class": test.error_class or None}


@shared_task(name="connections.connection_test_run", acks_late=True, ignore_result=False,
             soft_time_limit=diagnostics.TASK_SOFT_LIMIT_S,
             time_limit=diagnostics.TASK_HARD_LIMIT_S)
def connection_test_run_task(test_id: str) -> dict | None:
    """Run one connection test (ConnectionTest id, also its log lines' request id)."""
    with _request_id(str(test_id)):
        return _summary(diagnostics.connection_test_run(test_id=test_id))


@shared_task(name="connections.connection_discover_models_run", acks_late=True,
             ignore_result=False, soft_time_limit=diagnostics.TASK_SOFT_LIMIT_S,
             time_limit=diagnostics.TASK_HARD_LIMIT_S)
def connection_discover_models_run_task(test_id: str) -> dict | None:
    """Run one model discovery (ConnectionTest id of kind "discover", also its log lines'
    request id)."""
    with _request_id(str(test_id)):
        return _summary(diagnostics.connection_discover_models_run(test_id=test_id))


@shared_task(name="connections.connection_health_sweep", soft_time_limit=diagnostics.SWEEP_SOFT_LIMIT_S,
             time_limit=diagnostics.SWEEP_HARD_LIMIT_S)
def connection_health_sweep_task() -> dict:
    """Test every active connection (periodic, django-celery-beat); skipped if one is running."""
    with _request_id(new_request_id()):
        rows = diagnostics.connection_health_sweep_locked()
    if rows is None:
        return {"skipped": True}
    return {"tested": len(rows), "failed": sum(1 for r in rows if r.status == "failed")}


@shared_task(name="connections.connection_tests_reap")
def connection_tests_reap_task() -> dict:
    """Housekeeping (periodic): fail tests stuck running past their limit or never picked up,
    and forget replaced provider secrets whose rollback window has passed."""
    from .secret_rotation import connection_purge_expired_secrets

    return {"reaped": diagnostics.connection_tests_reap(),
            "expired_secrets_purged": connection_purge_expired_secrets()}
