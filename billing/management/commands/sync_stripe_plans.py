from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing import stripe_api


class Command(BaseCommand):
    help = (
        "Create or update one Stripe Product and one monthly Price per paid plan in billing/plans.py. "
        "Prices are found by lookup key (atelier_<plan>_monthly); a changed amount creates a new Price "
        "that takes over the lookup key and deactivates the old one. Uses STRIPE_TEST_SECRET_KEY or, "
        "with STRIPE_LIVE_MODE, STRIPE_LIVE_SECRET_KEY."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; call no write API.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        import stripe

        try:
            actions = stripe_api.sync_plans(dry_run=dry_run)
        except stripe.StripeError as error:
            raise CommandError(f"Stripe refused the request: {error.user_message or error}") from error
        for action in actions:
            self.stdout.write(f"{action.plan}: {action.action} ({action.detail})")
        changed = sum(1 for a in actions if a.action != "unchanged")
        self.stdout.write(
            f"{changed} change(s){' planned (dry run)' if dry_run else ''}, {len(actions)} item(s) checked."
        )
