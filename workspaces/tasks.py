"""Celery tasks of the workspaces app (thin: they call budgets/services)."""

from __future__ import annotations

from celery import shared_task

from . import budgets


@shared_task(name="workspaces.budget_reconcile")
def budget_reconcile_task() -> int:
    """Correct the budget counters in the cache from the usage records (scheduled by beat)."""
    return budgets.reconcile()
