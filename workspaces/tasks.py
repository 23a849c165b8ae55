"""Celery tasks of the workspaces app (thin: they call budgets/services)."""

from __future__ import annotations

import logging

from celery import shared_task

from llmconn.outage import is_database_outage

from . import budgets, usage_spool

logger = logging.getLogger(__name__)


def _drain() -> int:
    try:
        return usage_spool.drain()
    except Exception as exc:
        if not is_database_outage(exc):
            raise
        logger.warning("Usage spool not drained: database unavailable (%s).",
                       exc.__class__.__name__)
        return 0


@shared_task(name="workspaces.budget_reconcile")
def budget_reconcile_task() -> int:
    """Correct the budget counters in the cache from the usage records (scheduled by beat).

    Spooled usage rows are written first; while some are still waiting the counters (which
    counted those calls) are left as they are, so the rows are included once written."""
    _drain()
    if usage_spool.pending():
        logger.info("Budget reconcile skipped: usage rows are still spooled.")
        return 0
    return budgets.reconcile()


@shared_task(name="workspaces.usage_spool_drain")
def usage_spool_drain_task() -> int:
    """Write usage rows kept in the spool while the database was unavailable (beat, every
    minute; web processes drain their own spool within a second too)."""
    return _drain()
