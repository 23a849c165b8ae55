"""Schedule the budget counter reconciliation with django-celery-beat (every 5 minutes)."""

from django.db import migrations

NAME = "workspaces: reconcile budget counters with usage records"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_5, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=NAME,
        defaults={"task": "workspaces.budget_reconcile", "interval": every_5,
                  "description": "Rebuilds budget counters in the cache from the usage "
                                 "records (drift after a cache flush or a lost increment)."},
    )


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("workspaces", "0002_budgets_usage_attempt"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
