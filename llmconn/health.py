"""Health endpoints: /healthz says the process is up, /readyz checks what requests depend on.

/readyz answers 503 naming each dependency that is down (database, cache, broker); it never
includes connection strings or exception text, which could carry passwords. It also reports
`usage_spool`: usage rows kept while the database was unavailable, not yet written
({"redis": n, "file": n}).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    cache.set("llmconn:readyz", "1", 5)
    if cache.get("llmconn:readyz") != "1":
        raise RuntimeError("cache did not return what was written")


def _check_broker() -> None:
    from llmconn.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def readiness() -> dict[str, str]:
    """{"database": "ok"|"down", "cache": ..., "broker": ...}"""
    checks = {"database": _check_database, "cache": _check_cache}
    if settings.REDIS_URL and not settings.CELERY_TASK_ALWAYS_EAGER:
        checks["broker"] = _check_broker
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception:  # any failure means "not ready"; the log keeps the class only
            logger.warning("readiness check %s failed", name, exc_info=False)
            results[name] = "down"
    if "broker" not in results:
        results["broker"] = "eager (no broker configured)"
    return results


def _named(check: str) -> str:
    """"cache" → "cache (Redis)" when Redis backs it, so the message says what to fix."""
    return f"{check} (Redis)" if check in ("cache", "broker") and settings.REDIS_URL else check


def spool_depth() -> dict[str, int | None]:
    """Usage rows waiting in the spool to be written (workspaces/usage_spool.py): not a
    readiness failure (calls are answered and their rows kept), but what an operator watches
    during and after a database outage. None where a count cannot be read."""
    from workspaces import usage_spool

    try:
        return usage_spool.depth()
    except Exception:  # noqa: BLE001 - never fail the probe over a count
        logger.warning("usage spool depth unreadable", exc_info=False)
        return {"redis": None, "file": None}


@never_cache
@require_GET
def readyz(request):
    results = readiness()
    down = [name for name, state in results.items() if state == "down"]
    if down:
        return JsonResponse(
            {
                "status": "unavailable",
                "checks": results,
                "usage_spool": spool_depth(),
                "error": {
                    "code": "unavailable",
                    "message": f"Not ready: {', '.join(_named(n) for n in down)} unreachable.",
                    "fields": {},
                },
            },
            status=503,
        )
    return JsonResponse({"status": "ok", "checks": results, "usage_spool": spool_depth()})
