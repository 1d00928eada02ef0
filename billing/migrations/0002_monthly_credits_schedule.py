"""A daily django-q2 schedule for monthly Free credits and due downgrades (idempotent per period)."""

from django.db import migrations

FUNC = "billing.tasks.grant_monthly_credits"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    if not Schedule.objects.filter(func=FUNC).exists():
        Schedule.objects.create(
            name="Grant monthly credits", func=FUNC, schedule_type="D", repeats=-1
        )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(func=FUNC).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
