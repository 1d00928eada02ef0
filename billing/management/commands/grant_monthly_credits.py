from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from billing import tasks


class Command(BaseCommand):
    help = (
        "Grant this month's Free plan credits to every active Free user who has not had them yet "
        "(once per user and calendar month: ledger key monthly:<user>:<YYYY-MM>, so running it "
        "again is harmless), and apply downgrades whose period has ended. Paid plans get their "
        "credits from paid Stripe invoices instead. Runs daily from the django-q2 schedule."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be granted; change nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        result = tasks.grant_monthly_credits(dry_run=dry_run)
        prefix = "Would grant" if dry_run else "Granted"
        self.stdout.write(
            f"{prefix} monthly credits to {result['granted']} user(s); {result['skipped']} already had them; "
            f"{result['downgrades']} pending downgrade(s) applied."
        )
