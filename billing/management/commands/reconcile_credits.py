from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import services


class Command(BaseCommand):
    help = (
        "Compare every credit account's cached balance with the sum of its ledger entries, and find orphaned "
        "reservations: credits still held for a turn that has ended, whose session has finished, or that no "
        "longer exists, or for a team suggestion call left open far longer than a call can last. The ledger "
        "is the truth: with --fix, orphaned reservations are released (a turn left "
        "streaming in a finished session is marked failed) and drifted balances are set to the ledger sum "
        "(under the account lock). Without --fix (or with --dry-run) nothing is changed. Exits non-zero when "
        "something was found and not fixed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fix", action="store_true", help="Release orphans and repair drifted balances.")
        parser.add_argument("--dry-run", action="store_true", help="Report only (the default).")

    def handle(self, *args: Any, fix: bool, dry_run: bool, **options: Any) -> None:
        if fix and dry_run:
            raise CommandError("Use either --fix or --dry-run, not both.")
        orphans = services.find_orphaned_reservations()
        released = 0
        for orphan in orphans:
            self.stdout.write(
                f"user {orphan.user_id}: reservation {orphan.reservation_key} holds {orphan.held} credits, "
                f"but {orphan.reason} (session {orphan.session_id})"
            )
            if fix:
                services.release_orphaned_reservation(orphan=orphan)
                released += 1
        self.stdout.write(f"{len(orphans)} orphaned reservation(s), {released} released.")
        # Releasing moves the cached balance and the ledger together: drift is checked after it.
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
        if (drift or orphans) and not fix:
            raise CommandError("Problems found; run with --fix to repair them.")
