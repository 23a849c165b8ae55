"""Schedule the connection health sweep and the stuck-test reaper with django-celery-beat."""

from django.db import migrations

SWEEP = "connections: health sweep of active connections"
REAP = "connections: fail tests stuck past their time limit"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_15, _ = IntervalSchedule.objects.get_or_create(every=15, period="minutes")
    every_2, _ = IntervalSchedule.objects.get_or_create(every=2, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=SWEEP,
        defaults={"task": "connections.connection_health_sweep", "interval": every_15,
                  "description": "Tests every active connection (edit the interval in the admin)."},
    )
    PeriodicTask.objects.get_or_create(
        name=REAP,
        defaults={"task": "connections.connection_tests_reap", "interval": every_2,
                  "description": "Fails connection tests whose worker stopped."},
    )


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[SWEEP, REAP]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("connections", "0002_test_connection_revision"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(schedule, unschedule)]
