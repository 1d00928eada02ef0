"""Credit accounts and the append-only credit ledger.

Every change of a balance is a CreditEntry with a unique idempotency key, written by
billing.services under a row lock on the account; the account's balance is a cache of the
ledger sum (reconcile_credits checks it).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.plans import FREE, PLAN_CHOICES, Plan, get_plan


class PlanStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    GRACE = "grace", "Payment failed (grace period)"


class CreditAccount(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_account")
    balance = models.BigIntegerField(default=0, help_text="Cached sum of the ledger; reconcile_credits checks it.")
    plan = models.CharField(max_length=20, choices=PLAN_CHOICES, default=FREE)
    plan_status = models.CharField(max_length=20, choices=PlanStatus.choices, default=PlanStatus.ACTIVE)
    grace_until = models.DateTimeField(null=True, blank=True)
    pending_plan = models.CharField(
        max_length=20, choices=PLAN_CHOICES, blank=True, help_text="Plan that takes over at the period end."
    )
    current_period_end = models.DateTimeField(null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    # Creation time of the last subscription event applied: older events arriving late are ignored.
    stripe_state_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(balance__gte=0), name="credit_balance_not_negative")]

    def __str__(self) -> str:
        return f"{self.user} · {self.get_plan_display()} · {self.balance} credits"

    @property
    def plan_obj(self) -> Plan:
        return get_plan(self.plan)


class EntryKind(models.TextChoices):
    GRANT = "grant", "Grant"
    PURCHASE = "purchase", "Purchase"
    RESERVATION = "reservation", "Reservation"
    SETTLEMENT = "settlement", "Settlement"
    RELEASE = "release", "Release"
    ADJUSTMENT = "adjustment", "Staff adjustment"


class CreditEntry(models.Model):
    """One append-only line of the ledger. ``amount`` is signed: + adds credits, - takes them."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_entries")
    kind = models.CharField(max_length=20, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    # Settlements and releases close the reservation with this key (at most one may close it).
    reservation_key = models.CharField(max_length=255, blank=True)
    # Credits consumed by usage (settlements): what the usage history and charts add up.
    usage = models.BigIntegerField(default=0)
    description = models.CharField(max_length=500, blank=True)
    session_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    turn_id = models.BigIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "credit entries"
        constraints = [
            models.UniqueConstraint(
                fields=["reservation_key"], condition=~Q(reservation_key=""), name="one_close_per_reservation"
            )
        ]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} ({self.idempotency_key})"
