from django.db import migrations


def seed_catalogue(apps, schema_editor):
    from orchestration.catalogue import seed_catalogue as seed

    seed(apps)


def seed_presets(apps, schema_editor):
    from orchestration.presets import seed_presets as seed

    seed(apps)


def create_watchdog(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="orchestration-watchdog",
        defaults={
            "func": "orchestration.tasks.watchdog",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def remove_watchdog(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="orchestration-watchdog").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0002_engine_fields"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(seed_catalogue, migrations.RunPython.noop),
        migrations.RunPython(seed_presets, migrations.RunPython.noop),
        migrations.RunPython(create_watchdog, remove_watchdog),
    ]
