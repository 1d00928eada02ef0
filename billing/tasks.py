"""django-q2 entry points (the schedule is created by migration 0002)."""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.utils import timezone

from billing import services
from billing.models import CreditAccount, CreditEntry
from billing.plans import FREE

logger = logging.getLogger(__name__)


def grant_monthly_credits(*, dry_run: bool = False) -> dict[str, int]:
    """Daily: apply due downgrades, then grant this month's Free credits to every Free user who
    has not had them (idempotent: key monthly:<user>:<YYYY-MM>)."""
    today = timezone.now().date()
    downgrades = 0 if dry_run else services.apply_due_downgrades()
    paid = CreditAccount.objects.exclude(plan=FREE).values_list("user_id", flat=True)
    granted = skipped = 0
    for user in get_user_model().objects.filter(is_active=True).exclude(pk__in=paid).order_by("pk").iterator():
        key = services.monthly_key(user_id=user.pk, period=today)
        if CreditEntry.objects.filter(idempotency_key=key).exists():
            skipped += 1
            continue
        if not dry_run:
            # A user without an account gets the grant while the account is created; either way
            # the key now exists exactly once.
            services.grant_monthly_credits(user=user, period=today)
        granted += 1
    logger.info("Monthly credits: %s granted, %s already had them, %s downgrades", granted, skipped, downgrades)
    return {"granted": granted, "skipped": skipped, "downgrades": downgrades}
