# A conversation's flow (triage | pipeline) and the "stage" message role (orchestration/conversations/pipeline.py).

from django.db import migrations, models

# SQLite rebuilds a table for a NOT NULL AddField, which would drop the full-text triggers 0011 put on
# orchestration_conversation (conversations.search): add the column in place instead, on both databases.
ADD_FLOW = "ALTER TABLE orchestration_conversation ADD COLUMN flow varchar(12) DEFAULT 'triage' NOT NULL"
DROP_FLOW = "ALTER TABLE orchestration_conversation DROP COLUMN flow"


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0014_conversation_summary"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD_FLOW, DROP_FLOW)],
            state_operations=[
                migrations.AddField(
                    model_name="conversation",
                    name="flow",
                    field=models.CharField(
                        choices=[("triage", "Triage with handoffs"), ("pipeline", "Research, plan, build, review")],
                        default="triage",
                        max_length=12,
                    ),
                ),
            ],
        ),
        # Choices only: no database change (Django does not rebuild the table for it).
        migrations.AlterField(
            model_name="message",
            name="role",
            field=models.CharField(
                choices=[
                    ("user", "You"),
                    ("assistant", "Reply"),
                    ("handoff", "Handoff"),
                    ("tool", "Tool call"),
                    ("note", "Note"),
                    ("stage", "Pipeline stage"),
                ],
                max_length=12,
            ),
        ),
    ]
