from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from billing import services


class Command(BaseCommand):
    help = (
        "Compare every credit account's cached balance with the sum of its ledger entries. "
        "The ledger is the truth: with --fix, drifted balances are set to the ledger sum (under the "
        "account lock). Without --fix (or with --dry-run) nothing is changed. Exits non-zero when "
        "drift was found and not fixed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="Set drifted balances to the ledger sum.")
        parser.add_argument("--dry-run", action="store_true", help="Report only (the default).")

    def handle(self, *args, fix: bool, dry_run: bool, **options):
        if fix and dry_run:
            raise CommandError("Use either --fix or --dry-run, not both.")
        drift = services.find_drift()
        repaired = 0
        for item in drift:
            self.stdout.write(
                f"user {item.user_id}: cached balance {item.cached}, ledger {item.ledger} "
                f"(drift {item.cached - item.ledger:+d})"
            )
            if fix and services.repair_drift(user_id=item.user_id) is not None:
                repaired += 1
        self.stdout.write(f"{len(drift)} account(s) with drift, {repaired} repaired.")
        if drift and not fix:
            raise CommandError("Drift found; run with --fix to repair it.")
