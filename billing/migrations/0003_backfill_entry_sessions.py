"""Give every turn's ledger entries their session, so usage by session adds up.

Until now the engine reserved credits without a session id, and settlements/releases copy it from the
reservation, so none of them had one (the billing page's "Usage by session" stayed empty). This fills
session_id on every entry that has none:
1. from the reservation it closes (settlements and releases carry the reservation_key), then
2. from the turn it belongs to (turn_id, parsed from "turn:<id>:..." keys when written).
Entries of turns that were deleted since stay without a session (nothing to attribute them to).
It only reads orchestration's Turn table; the ledger stays append-only in meaning (no amount changes).
"""

from django.db import migrations

BATCH = 1000


def backfill(apps, schema_editor):
    CreditEntry = apps.get_model("billing", "CreditEntry")
    Turn = apps.get_model("orchestration", "Turn")
    missing = list(
        CreditEntry.objects.filter(session_id__isnull=True).only(
            "pk", "kind", "idempotency_key", "reservation_key", "turn_id"
        )
    )
    ids = sorted({entry.turn_id for entry in missing if entry.turn_id is not None})
    turn_session: dict[int, int] = {}
    for start in range(0, len(ids), BATCH):
        turn_session.update(Turn.objects.filter(pk__in=ids[start : start + BATCH]).values_list("pk", "session_id"))
    # Reservations first (by their turn), then what closes them (by the reservation, else by their turn).
    held = dict(
        CreditEntry.objects.filter(kind="reservation", session_id__isnull=False).values_list(
            "idempotency_key", "session_id"
        )
    )
    updates = []
    for entry in sorted(missing, key=lambda e: e.kind != "reservation"):
        session_id = held.get(entry.reservation_key) if entry.reservation_key else None
        if session_id is None and entry.turn_id is not None:
            session_id = turn_session.get(entry.turn_id)
        if session_id is None:
            continue
        entry.session_id = session_id
        updates.append(entry)
        if entry.kind == "reservation":
            held[entry.idempotency_key] = session_id
    CreditEntry.objects.bulk_update(updates, ["session_id"], batch_size=BATCH)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_monthly_credits_schedule"),
        ("orchestration", "0002_engine_fields"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
