"""Usage rows: request id (idempotent replays from the spool), call time kept; the spool's
drain task scheduled with django-celery-beat (every minute)."""

import django.utils.timezone
from django.db import migrations, models

DRAIN = "workspaces: write usage rows kept in the spool"


def schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=DRAIN,
        defaults={"task": "workspaces.usage_spool_drain", "interval": every_minute,
                  "description": "Writes usage rows kept in the spool (Redis list) while the "
                                 "database was unavailable."},
    )


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=DRAIN).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('connections', '0004_gateway_prices_and_timeout'),
        ('workspaces', '0004_people_and_defaults'),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
    ]

    operations = [
        migrations.AddField(
            model_name='usagerecord',
            name='request_id',
            field=models.CharField(blank=True, max_length=160, null=True),
        ),
        migrations.AlterField(
            model_name='usagerecord',
            name='created_at',
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AddConstraint(
            model_name='usagerecord',
            constraint=models.UniqueConstraint(condition=models.Q(('request_id__isnull', False)), fields=('request_id', 'attempt'), name='usage_request_id_attempt_unique'),
        ),
        migrations.RunPython(schedule, unschedule),
    ]
