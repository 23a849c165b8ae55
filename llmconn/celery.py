"""The Celery app. Configuration comes from Django settings (CELERY_* names).

Without REDIS_URL tasks run eagerly in the calling process, so a first run needs no broker.
https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmconn.settings")

app = Celery("llmconn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _count_tasks(sender, **kwargs):
    """Task outcome metrics (llmconn/metrics.py), connected once Django's settings are read."""
    from .metrics import connect_celery_signals

    connect_celery_signals()
