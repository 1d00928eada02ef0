"""Create the shipped model catalogue rows and team presets (the data migration does the same once)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from orchestration.catalogue import CATALOGUE, PRICE_FIELDS, seed_catalogue
from orchestration.models import LLMModel, TeamPreset
from orchestration.presets import seed_presets


class _Rollback(Exception):
    pass


def planned_changes(*, update_existing: bool) -> list[tuple[str, str, list[str]]]:
    """(provider:model_id, "create" | "update", fields) for every row the seed would write.

    Mirrors seed_catalogue's rule, so the command can say what changes before (or instead of) writing.
    """
    changes: list[tuple[str, str, list[str]]] = []
    for entry in CATALOGUE:
        ref = f"{entry['provider']}:{entry['model_id']}"
        defaults = {k: v for k, v in entry.items() if k not in ("provider", "model_id")}
        row = LLMModel.objects.filter(provider=entry["provider"], model_id=entry["model_id"]).first()
        if row is None:
            changes.append((ref, "create", []))
            continue
        fields = defaults.keys() if update_existing else [f for f in PRICE_FIELDS if getattr(row, f) is None]
        updates = [f for f in fields if getattr(row, f) != defaults[f]]
        if updates:
            changes.append((ref, "update", updates))
    return changes


class Command(BaseCommand):
    help = (
        "Seed the model catalogue and the shipped team presets. Idempotent. Catalogue rules: missing "
        "models are created; an existing model only gets prices it lacks, so prices and multipliers "
        "staff changed in the admin are kept. --update-prices resets every seeded field of the shipped "
        "models (prices, credit multipliers, context windows, names, enabled, order) to the shipped "
        "values, overwriting staff edits; models staff added themselves are never touched. Shipped "
        "presets (no owner) are always created or updated to the shipped version; users' own presets "
        "are never touched. --dry-run lists what would change and saves nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--update-prices",
            action="store_true",
            help="Reset the shipped models' prices and other seeded fields to the shipped values.",
        )
        parser.add_argument("--dry-run", action="store_true", help="List what would change; save nothing.")

    def handle(self, *args: Any, update_prices: bool, dry_run: bool, **options: Any) -> None:
        changes = planned_changes(update_existing=update_prices)
        for ref, action, fields in changes:
            detail = f" ({', '.join(fields)})" if fields else ""
            self.stdout.write(f"  {'would ' if dry_run else ''}{action} {ref}{detail}")
        presets_before = TeamPreset.objects.filter(owner=None).count()
        try:
            with transaction.atomic():
                changed = seed_catalogue(update_existing=update_prices)
                preset_count = seed_presets()
                new_presets = TeamPreset.objects.filter(owner=None).count() - presets_before
                if dry_run:
                    raise _Rollback
        except _Rollback:
            pass
        created = sum(1 for _, action, _ in changes if action == "create")
        prefix = "Dry run: would change" if dry_run else "Changed"
        self.stdout.write(
            self.style.SUCCESS(
                f"{prefix} {changed} of {len(CATALOGUE)} shipped catalogue model(s) ({created} new, "
                f"{changed - created} updated); {preset_count} shipped preset(s) "
                f"{'would be ' if dry_run else ''}created or refreshed ({new_presets} new)."
            )
        )
