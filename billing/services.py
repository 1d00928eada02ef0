"""Every write to credit accounts and the ledger happens here.

Rules: each mutation runs in ``transaction.atomic()`` with the account row locked
(``select_for_update``), checks its idempotency key under that lock (a retry is a no-op), and
never lets the balance go below zero (the database refuses it too: CheckConstraint).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from atelier.core.sql import insert_rows
from billing.models import CreditAccount, CreditEntry, EntryKind, PlanStatus
from billing.plans import FREE, PLANS, Plan, get_plan

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

GRACE_PERIOD = dt.timedelta(days=7)
_TURN_KEY = re.compile(r"^turn:(\d+):")


class InsufficientCredits(Exception):
    def __init__(self, *, needed: int, available: int):
        self.needed = needed
        self.available = available
        super().__init__(f"Out of credits: this needs {needed} credits and {available} are available.")


def monthly_key(*, user_id: int, period: dt.date) -> str:
    return f"monthly:{user_id}:{period:%Y-%m}"


# --- accounts ---------------------------------------------------------------------------------


def get_account(user: User) -> CreditAccount:
    """The user's account; created on first access with the current period's Free credits."""
    account = CreditAccount.objects.filter(user=user).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            account = CreditAccount.objects.create(user=user)
    except IntegrityError:  # another request created it first
        return CreditAccount.objects.get(user=user)
    grant_monthly_credits(user=user)
    account.refresh_from_db()
    return account


def get_balance(user: User) -> int:
    return get_account(user).balance


def effective_plan(account: CreditAccount, *, now: dt.datetime | None = None) -> Plan:
    """The plan whose limits apply now: a grace period that ran out falls back to Free."""
    now = now or timezone.now()
    if account.plan_status == PlanStatus.GRACE and account.grace_until and account.grace_until < now:
        return PLANS[FREE]
    return get_plan(account.plan)


def hold_user_lock(*, user: User) -> CreditAccount:
    """Lock the user's credit account row until the current transaction ends; returns it.

    Serializes one user's limit checks that count rows and then write (concurrent runs, quotas on
    projects, sessions and references): a count taken after this lock sees every concurrent
    writer's committed result (PostgreSQL READ COMMITTED reads a fresh snapshot per statement;
    SQLite's IMMEDIATE transactions serialize writers anyway). Must be called inside
    ``transaction.atomic()``.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("hold_user_lock() needs a transaction: the lock ends with it.")
    return _locked_account(user)


def _locked_account(user: User) -> CreditAccount:
    try:  # the common case is one query: the account exists, lock it
        return CreditAccount.objects.select_for_update().get(user=user)
    except CreditAccount.DoesNotExist:
        get_account(user)  # create it (with this period's Free credits), then lock it
        return CreditAccount.objects.select_for_update().get(user=user)


def _existing(key: str) -> CreditEntry | None:
    return CreditEntry.objects.filter(idempotency_key=key).first()


def _write(
    account: CreditAccount,
    *,
    kind: str,
    amount: int,
    key: str,
    description: str = "",
    reservation_key: str = "",
    usage: int = 0,
    session_id: int | None = None,
    turn_id: int | None = None,
    created_by: User | None = None,
) -> CreditEntry:
    """Append one entry and move the cached balance; caller holds the account lock."""
    new_balance = account.balance + amount
    if new_balance < 0:
        raise InsufficientCredits(needed=-amount, available=account.balance)
    if turn_id is None and (match := _TURN_KEY.match(key)):
        turn_id = int(match.group(1))
    entry = CreditEntry.objects.create(
        user_id=account.user_id,
        kind=kind,
        amount=amount,
        balance_after=new_balance,
        idempotency_key=key,
        reservation_key=reservation_key,
        usage=usage,
        description=description[:500],
        session_id=session_id,
        turn_id=turn_id,
        created_by=created_by,
    )
    account.balance = new_balance
    account.save(update_fields=["balance", "updated_at"])
    return entry


def _add(
    *, user: User, kind: str, amount: int, key: str, description: str = "", created_by: User | None = None
) -> bool:
    """Credit-adding (or staff) entry; True if written, False if the key was already used."""
    with transaction.atomic():
        account = _locked_account(user)
        if _existing(key):
            return False
        _write(account, kind=kind, amount=amount, key=key, description=description, created_by=created_by)
        return True


# --- grants and purchases ---------------------------------------------------------------------


def grant_credits(*, user: User, amount: int, key: str, description: str = "", kind: str = EntryKind.GRANT) -> bool:
    if amount < 0:
        raise ValueError("A grant cannot be negative; use adjust_credits.")
    return _add(user=user, kind=kind, amount=amount, key=key, description=description)


def grant_monthly_credits(*, user: User, period: dt.date | None = None) -> bool:
    """The Free plan's monthly credits, once per user and calendar month. Paid plans get theirs
    from each paid invoice instead (handle_invoice_paid)."""
    period = period or timezone.now().date()
    account = CreditAccount.objects.filter(user=user).first()
    if account is not None and account.plan != FREE:
        return False
    plan = PLANS[FREE]
    return grant_credits(
        user=user,
        amount=plan.monthly_credits,
        key=monthly_key(user_id=user.pk, period=period),
        description=f"{plan.name} plan credits for {period:%B %Y}",
    )


def adjust_credits(
    *, user: User, amount: int, reason: str, staff_user: User | None, key: str | None = None
) -> CreditEntry:
    """A staff correction (positive or negative); `staff_user` None for a system adjustment. Refused if it
    would take the balance below zero."""
    if not reason.strip():
        raise ValueError("A staff adjustment needs a reason.")
    key = key or f"adjust:{user.pk}:{timezone.now().timestamp():.6f}"
    with transaction.atomic():
        account = _locked_account(user)
        if existing := _existing(key):
            return existing
        return _write(
            account, kind=EntryKind.ADJUSTMENT, amount=amount, key=key, description=reason, created_by=staff_user
        )


# --- reserve / settle / release (called by the engine around every model call) -----------------


def reserve_credits(
    *,
    user: User,
    amount: int,
    key: str,
    description: str = "",
    session_id: int | None = None,
    turn_id: int | None = None,
    new_key: bool = False,
) -> None:
    """Hold ``amount`` credits (the balance goes down now). Idempotent on ``key``.

    ``new_key=True``: the caller guarantees ``key`` was never used (it names a row created in this very
    transaction, like a new turn), so the idempotency lookup is skipped and the hold is two statements
    (a conditional balance UPDATE … RETURNING, then the ledger entry), the engine's hot path (issue 15).
    Raises InsufficientCredits when the balance cannot cover it (nothing is held then).
    """
    if amount < 0:
        raise ValueError("A reservation cannot be negative.")
    if new_key:
        # Nothing in here raises on a short balance, so no savepoint is needed: a refusal falls through.
        with transaction.atomic(savepoint=False):
            if (balance := _move_balance(user_id=user.pk, amount=-amount)) is not None:
                _append_entry(
                    user_id=user.pk,
                    balance_after=balance,
                    kind=EntryKind.RESERVATION,
                    amount=-amount,
                    key=key,
                    description=description,
                    session_id=session_id,
                    turn_id=turn_id,
                )
                return
    with transaction.atomic():
        account = _locked_account(user)
        if _existing(key):
            return
        _write(
            account,
            kind=EntryKind.RESERVATION,
            amount=-amount,
            key=key,
            description=description,
            session_id=session_id,
            turn_id=turn_id,
        )


def _move_balance(*, user_id: int, amount: int) -> int | None:
    """Add ``amount`` (negative: take) to the cached balance in one statement, never below zero.

    Returns the new balance, or None when the account is missing or cannot cover it (nothing written).
    The UPDATE takes the account's row lock like select_for_update() does. Raw SQL: the ORM cannot
    return the updated value (Django 5.2 has no UPDATE … RETURNING).
    """
    table = connection.ops.quote_name(CreditAccount._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET balance = balance + %s, updated_at = %s "  # noqa: S608 - no user input
            "WHERE user_id = %s AND balance + %s >= 0 RETURNING balance",
            [amount, now, user_id, amount],
        )
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _append_entry(*, user_id: int, balance_after: int, kind: str, amount: int, key: str, **fields: Any) -> int:
    """The ledger row for a balance already moved by _move_balance (same transaction): its id.

    Raises IntegrityError if `key` was used (the callers' fast paths guarantee it was not)."""
    if fields.get("turn_id") is None and (match := _TURN_KEY.match(key)):
        fields["turn_id"] = int(match.group(1))
    fields["description"] = fields.get("description", "")[:500]
    # A plain INSERT (atelier.core.sql): the engine writes two of these per turn (issue 15).
    entry = {"user_id": user_id, "kind": kind, "amount": amount, "balance_after": balance_after, **fields}
    return insert_rows(CreditEntry, [{**entry, "idempotency_key": key}])[0]


def credits_held(*, reservation_keys: list[str]) -> int:
    """Credits held right now by the still-open reservations among `reservation_keys` (one query).

    A reservation is open until a settlement or release names it (`reservation_key`); the live page shows
    this as what the turns being written may cost at most, before each settles to its exact charge.
    """
    if not reservation_keys:
        return 0
    closed = CreditEntry.objects.filter(reservation_key__in=reservation_keys).values("reservation_key")
    held = (
        CreditEntry.objects.filter(idempotency_key__in=reservation_keys, kind=EntryKind.RESERVATION)
        .exclude(idempotency_key__in=closed)
        .aggregate(total=Sum("amount"))["total"]
    )
    return -(held or 0)


def _held(reservation_key: str) -> tuple[int, CreditEntry | None]:
    reservation = CreditEntry.objects.filter(idempotency_key=reservation_key, kind=EntryKind.RESERVATION).first()
    return (-reservation.amount if reservation else 0), reservation


def settle_credits(
    *,
    user: User,
    reservation_key: str,
    actual: int,
    key: str,
    description: str = "",
    session_id: int | None = None,
    turn_id: int | None = None,
    held: int | None = None,
) -> int:
    """Charge ``actual`` against a reservation and release the rest; returns credits charged.

    If ``actual`` exceeds what was held, the extra is charged only up to the available balance
    (the balance never goes negative) and the entry's description records the shortfall.
    Idempotent on ``key``, and a reservation is closed at most once (a second settle or release
    of the same reservation charges nothing more).

    ``held``: the reserved amount, passed along by a caller that holds the reservation open itself (the
    engine, having just claimed the turn from streaming in this transaction, so nothing else can have
    settled or released it). Then, when ``actual`` fits in it, the settlement is two statements (balance
    UPDATE … RETURNING, ledger entry) instead of a lock, a lookup, an insert and an update.
    """
    if actual < 0:
        raise ValueError("Actual usage cannot be negative.")
    if (
        held is not None
        and actual <= held
        and _settle_within_hold(
            user_id=user.pk,
            held=held,
            actual=actual,
            key=key,
            description=description,
            reservation_key=reservation_key,
            session_id=session_id,
            turn_id=turn_id,
        )
    ):
        return actual
    return _settle_under_lock(
        user=user,
        reservation_key=reservation_key,
        actual=actual,
        key=key,
        description=description,
        session_id=session_id,
        turn_id=turn_id,
    )


def _settle_under_lock(
    *,
    user: User,
    reservation_key: str,
    actual: int,
    key: str,
    description: str,
    session_id: int | None,
    turn_id: int | None,
) -> int:
    """`settle_credits` under the account's row lock: idempotent on ``key``, a reservation closed at most
    once, the extra over the hold charged only up to the balance. Returns credits charged."""
    with transaction.atomic():
        account = _locked_account(user)
        # One query for the three things that decide what to do: this settlement already written
        # (a retry), the reservation already closed by another key, and the reservation itself.
        related = list(
            CreditEntry.objects.filter(
                Q(idempotency_key=key) | Q(reservation_key=reservation_key) | Q(idempotency_key=reservation_key)
            )
        )
        if existing := next((e for e in related if e.idempotency_key == key), None):
            return existing.usage
        if closed := next((e for e in related if e.reservation_key == reservation_key), None):
            logger.warning("Reservation %s already closed by %s", reservation_key, closed.idempotency_key)
            return closed.usage if closed.kind == EntryKind.SETTLEMENT else 0
        reservation = next(
            (e for e in related if e.idempotency_key == reservation_key and e.kind == EntryKind.RESERVATION), None
        )
        held = -reservation.amount if reservation else 0
        if reservation is not None:
            session_id = session_id if session_id is not None else reservation.session_id
            turn_id = turn_id if turn_id is not None else reservation.turn_id
        extra = max(0, actual - held)
        extra_charged = min(extra, account.balance)
        charged = min(actual, held) + extra_charged
        note = description
        if extra_charged < extra:
            note = f"{description} (usage {actual}, charged {charged}: balance exhausted)".strip()
        _write(
            account,
            kind=EntryKind.SETTLEMENT,
            amount=held - charged,
            key=key,
            description=note,
            reservation_key=reservation_key,
            usage=charged,
            session_id=session_id,
            turn_id=turn_id,
        )
        return charged


def _settle_within_hold(
    *,
    user_id: int,
    held: int,
    actual: int,
    key: str,
    description: str,
    reservation_key: str,
    session_id: int | None,
    turn_id: int | None,
) -> bool:
    """`settle_credits`' fast path, for a caller that holds the reservation open itself and charges no more
    than it holds: give back ``held - actual`` and write the settlement, two statements. False (nothing
    written) when the balance row could not be moved; the caller then takes the locked path."""
    with transaction.atomic(savepoint=False):
        balance = _move_balance(user_id=user_id, amount=held - actual)
        if balance is None:
            return False
        _append_entry(
            user_id=user_id,
            balance_after=balance,
            kind=EntryKind.SETTLEMENT,
            amount=held - actual,
            key=key,
            description=description,
            reservation_key=reservation_key,
            usage=actual,
            session_id=session_id,
            turn_id=turn_id,
        )
        return True


def release_credits(*, user: User, reservation_key: str, key: str) -> None:
    """Give back everything a reservation still holds (the call never happened or failed)."""
    with transaction.atomic():
        account = _locked_account(user)
        if _existing(key) or CreditEntry.objects.filter(reservation_key=reservation_key).exists():
            return
        held, reservation = _held(reservation_key)
        if reservation is None:
            return
        _write(
            account,
            kind=EntryKind.RELEASE,
            amount=held,
            key=key,
            description=f"Released {held} unused credits",
            reservation_key=reservation_key,
            session_id=reservation.session_id,
            turn_id=reservation.turn_id,
        )


# --- reconciliation ----------------------------------------------------------------------------


@dataclass
class Drift:
    user_id: int
    cached: int
    ledger: int


def find_drift() -> list[Drift]:
    sums = dict(
        CreditEntry.objects.values_list("user_id").annotate(total=Sum("amount")).values_list("user_id", "total")
    )
    drift = []
    for account in CreditAccount.objects.order_by("pk"):
        ledger = sums.get(account.user_id) or 0
        if ledger != account.balance:
            drift.append(Drift(user_id=account.user_id, cached=account.balance, ledger=ledger))
    return drift


def repair_drift(*, user_id: int) -> Drift | None:
    """Set the cached balance to the ledger sum, under the lock. The ledger is the truth."""
    with transaction.atomic():
        account = CreditAccount.objects.select_for_update().get(user_id=user_id)
        ledger = CreditEntry.objects.filter(user_id=user_id).aggregate(total=Sum("amount"))["total"] or 0
        if ledger == account.balance:
            return None
        drift = Drift(user_id=user_id, cached=account.balance, ledger=ledger)
        if ledger < 0:
            raise ValueError(f"Ledger of user {user_id} sums to {ledger}: needs a staff adjustment first.")
        account.balance = ledger
        account.save(update_fields=["balance", "updated_at"])
        return drift


@dataclass
class OrphanedReservation:
    """An open reservation (nothing settled or released it) that nothing will ever close by itself."""

    user_id: int
    reservation_key: str
    held: int  # credits still held, >= 0
    turn_id: int | None
    session_id: int | None
    reason: str  # in words, for the report
    turn_streaming: bool  # the turn itself was left streaming in a finished session


FINISHED_SESSION_STATUSES = ("completed", "failed", "stopped")


def find_orphaned_reservations() -> list[OrphanedReservation]:
    """Open turn reservations whose turn is terminal, whose session has finished, or whose turn is gone;
    and reservations of a blocking call outside a turn (a team suggestion) left open far longer than the
    call could last.

    A reservation of a turn still streaming in a running session is not an orphan: its call is in flight
    (or the engine's recovery will close it). Other reservations are left alone.
    """
    from django.apps import apps

    Turn = apps.get_model("orchestration", "Turn")
    closed = CreditEntry.objects.exclude(reservation_key="").values("reservation_key")
    open_reservations = (
        CreditEntry.objects.filter(kind=EntryKind.RESERVATION).exclude(idempotency_key__in=closed).order_by("pk")
    )
    orphans = []
    for reservation in open_reservations:
        turn_id = reservation.turn_id
        if turn_id is None and (match := _TURN_KEY.match(reservation.idempotency_key)):
            turn_id = int(match.group(1))
        if turn_id is None:
            if (orphan := _stale_call_reservation(reservation)) is not None:
                orphans.append(orphan)
            continue
        turn = (
            Turn.objects.filter(pk=turn_id).values("status", "session_id", "session__status").first()
            if turn_id
            else None
        )
        streaming = False
        if turn is None:
            reason = "its turn no longer exists"
        elif turn["status"] != "streaming":
            reason = f"its turn is {turn['status']}"
        elif turn["session__status"] in FINISHED_SESSION_STATUSES:
            reason = f"its turn is still streaming but the session is {turn['session__status']}"
            streaming = True
        else:
            continue
        orphans.append(
            OrphanedReservation(
                user_id=reservation.user_id,
                reservation_key=reservation.idempotency_key,
                held=-reservation.amount,
                turn_id=turn_id,
                session_id=turn["session_id"] if turn else reservation.session_id,
                reason=reason,
                turn_streaming=streaming,
            )
        )
    return orphans


# Reservations held by a blocking call outside any turn (orchestration.team_suggestion): the web request
# settles or releases them in the same request, so one still open long after the provider timeout means
# the process died mid-call.
CALL_RESERVATION_PREFIXES = ("suggest:",)


def _stale_call_reservation(reservation: CreditEntry) -> OrphanedReservation | None:
    from django.conf import settings

    if not reservation.idempotency_key.startswith(CALL_RESERVATION_PREFIXES):
        return None
    # Longer than any call can last: the provider timeout, a repair call and margin.
    grace = dt.timedelta(seconds=max(600.0, 3 * float(getattr(settings, "PROVIDER_TIMEOUT_SECONDS", 120))))
    if reservation.created_at > timezone.now() - grace:
        return None  # the call may still be running
    return OrphanedReservation(
        user_id=reservation.user_id,
        reservation_key=reservation.idempotency_key,
        held=-reservation.amount,
        turn_id=None,
        session_id=reservation.session_id,
        reason="a team suggestion call never settled it (its web process stopped mid-call)",
        turn_streaming=False,
    )


def release_orphaned_reservation(*, orphan: OrphanedReservation) -> None:
    """Give back what an orphaned reservation holds; a turn left streaming in a finished session ends failed.

    Uses the engine's own release key, so a late engine release of the same turn is a no-op.
    """
    from django.contrib.auth import get_user_model

    if orphan.turn_streaming and orphan.session_id is not None and orphan.turn_id is not None:
        from orchestration.turns import fail_turn

        fail_turn(session_id=orphan.session_id, turn_id=orphan.turn_id, text=None)
    user = get_user_model().objects.get(pk=orphan.user_id)
    key = f"turn:{orphan.turn_id}:release" if orphan.turn_id else f"{orphan.reservation_key}:release"
    release_credits(user=user, reservation_key=orphan.reservation_key, key=key)


# --- plan changes (from Stripe webhooks and the daily task) -------------------------------------


def apply_due_downgrades(*, now: dt.datetime | None = None) -> int:
    """Pending downgrades whose period ended take effect."""
    now = now or timezone.now()
    count = 0
    for account_id in (
        CreditAccount.objects.exclude(pending_plan="").filter(current_period_end__lte=now).values_list("pk", flat=True)
    ):
        with transaction.atomic():
            account = CreditAccount.objects.select_for_update().get(pk=account_id)
            if account.pending_plan and account.current_period_end and account.current_period_end <= now:
                account.plan = account.pending_plan
                account.pending_plan = ""
                account.save(update_fields=["plan", "pending_plan", "updated_at"])
                count += 1
    return count


# --- Stripe state (called by billing.webhooks with data from signed events) -------------------


def account_for_stripe(*, customer_id: str = "", user_id: str | int | None = None) -> CreditAccount | None:
    """Find the account by Stripe customer, else by our user id in metadata (links the customer)."""
    from django.contrib.auth import get_user_model

    if customer_id:
        account = CreditAccount.objects.filter(stripe_customer_id=customer_id).first()
        if account is not None:
            return account
    if not user_id or not str(user_id).isdigit():
        return None
    user = get_user_model().objects.filter(pk=int(user_id)).first()
    if user is None:
        return None
    account = get_account(user)
    if customer_id and not account.stripe_customer_id:
        CreditAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(stripe_customer_id=customer_id)
        account.refresh_from_db()
    return account


def link_stripe_customer(
    *, user: User, customer_id: str, subscription_id: str = "", event_at: dt.datetime | None = None
) -> bool:
    """Remember the user's Stripe customer (and subscription). False if ``event_at`` is older than
    the subscription state already applied: a late checkout.session.completed must not bring back
    a subscription that has since ended."""
    with transaction.atomic():
        account = _locked_account(user)
        if event_at is not None and account.stripe_state_at and event_at < account.stripe_state_at:
            return False
        account.stripe_customer_id = customer_id or account.stripe_customer_id
        if subscription_id:
            account.stripe_subscription_id = subscription_id
        account.save(update_fields=["stripe_customer_id", "stripe_subscription_id", "updated_at"])
        return True


def forget_stripe_customer(*, user: User, customer_id: str, event_at: dt.datetime | None = None) -> bool:
    """The Stripe customer ``customer_id`` no longer exists (customer.deleted, or Stripe answered
    "No such customer"). Unlinks it; its subscriptions ended with it, so the account returns to
    Free (credits already granted stay). False if the account is linked to another customer."""
    with transaction.atomic():
        account = _locked_account(user)
        if account.stripe_customer_id != customer_id:
            return False
        account.stripe_customer_id = ""
        account.stripe_subscription_id = ""
        account.plan = FREE
        account.pending_plan = ""
        account.plan_status = PlanStatus.ACTIVE
        account.grace_until = None
        if event_at is not None and (account.stripe_state_at is None or event_at > account.stripe_state_at):
            account.stripe_state_at = event_at
        account.save()
        return True


def invoice_key(invoice_id: str) -> str:
    return f"stripe:{invoice_id}"


def apply_paid_invoice(
    *,
    user: User,
    invoice_id: str,
    plan: Plan,
    credits: int,
    description: str,
    starts_period: bool = True,
    subscription_id: str = "",
    period_end: dt.datetime | None = None,
    event_at: dt.datetime | None = None,
) -> bool:
    """Record one paid invoice exactly once (key stripe:<invoice>) and grant ``credits`` for it
    (billing.plans.credits_for_invoice; 0 still writes the entry, which marks the invoice paid so a
    late payment failure for it is recognised). Returns False if the invoice was already recorded.

    A paid invoice also proves the subscription: it upgrades the plan to the one paid for unless a
    newer subscription state has been applied (events arrive in any order), and ends a grace
    period that started before it.
    """
    key = invoice_key(invoice_id)
    with transaction.atomic():
        account = _locked_account(user)
        if _existing(key):
            return False
        _write(account, kind=EntryKind.PURCHASE, amount=credits, key=key, description=description)
        newer_state = event_at is not None and account.stripe_state_at and event_at < account.stripe_state_at
        if not newer_state and plan.rank > get_plan(account.plan).rank:
            account.plan = plan.key
        # grace_until runs from the failure's event time: a payment older than the failure ends nothing.
        grace_started = account.grace_until - GRACE_PERIOD if account.grace_until else None
        if account.plan_status == PlanStatus.GRACE and (
            event_at is None or grace_started is None or event_at >= grace_started
        ):
            account.plan_status = PlanStatus.ACTIVE
            account.grace_until = None
        if subscription_id and not newer_state:
            account.stripe_subscription_id = subscription_id
        if (
            starts_period
            and period_end
            and (account.current_period_end is None or period_end > account.current_period_end)
        ):
            account.current_period_end = period_end
        account.save()
        return True


ACTIVE_SUBSCRIPTION = {"active", "trialing"}
GRACE_SUBSCRIPTION = {"past_due", "unpaid"}
ENDED_SUBSCRIPTION = {"canceled", "incomplete_expired"}


def apply_subscription_state(
    *,
    user: User,
    subscription_id: str,
    plan: Plan | None,
    status: str,
    cancel_at_period_end: bool,
    period_end: dt.datetime | None,
    event_at: dt.datetime,
    deleted: bool = False,
) -> str:
    """Mirror a subscription event onto the account; returns what happened (for logs and tests).

    Upgrades apply at once, downgrades and cancellations at the period end (pending_plan);
    an event older than the last one applied is ignored, so out-of-order delivery is harmless.
    """
    with transaction.atomic():
        account = _locked_account(user)
        if account.stripe_state_at and event_at < account.stripe_state_at:
            return "stale"
        if account.stripe_subscription_id and subscription_id != account.stripe_subscription_id and deleted:
            return "other subscription"
        account.stripe_state_at = event_at
        if period_end:
            account.current_period_end = period_end
        if deleted or status in ENDED_SUBSCRIPTION:
            account.plan = FREE
            account.pending_plan = ""
            account.plan_status = PlanStatus.ACTIVE
            account.grace_until = None
            account.stripe_subscription_id = ""
            outcome = "ended"
        elif status in GRACE_SUBSCRIPTION:
            if account.plan_status != PlanStatus.GRACE:
                account.plan_status = PlanStatus.GRACE
                account.grace_until = min(event_at, timezone.now()) + GRACE_PERIOD
            outcome = "grace"
        elif status in ACTIVE_SUBSCRIPTION and plan is not None:
            account.stripe_subscription_id = subscription_id
            current = get_plan(account.plan)
            if plan.rank >= current.rank:
                account.plan = plan.key
                account.pending_plan = ""
                outcome = "upgraded" if plan.rank > current.rank else "unchanged"
            else:
                account.pending_plan = plan.key
                outcome = "downgrade pending"
            if cancel_at_period_end:
                account.pending_plan = FREE
                outcome = "cancel pending"
            account.plan_status = PlanStatus.ACTIVE
            account.grace_until = None
        else:
            outcome = "ignored"  # incomplete: payment not done yet
        account.save()
        return outcome


def start_grace_period(*, user: User, invoice_id: str = "", event_at: dt.datetime | None = None) -> bool:
    """A payment failed: keep the plan for GRACE_PERIOD. True if the grace period starts now.

    Refused (False) when the invoice is already recorded as paid (a late failure notice), when a
    subscription state newer than the failure has been applied, or when grace is already running.
    """
    with transaction.atomic():
        account = _locked_account(user)
        if account.plan_status == PlanStatus.GRACE:
            return False
        if invoice_id and _existing(invoice_key(invoice_id)):
            return False
        if event_at is not None and account.stripe_state_at and event_at < account.stripe_state_at:
            return False
        account.plan_status = PlanStatus.GRACE
        # From when the payment failed (Stripe may deliver the event late), not from when we heard.
        account.grace_until = min(event_at or timezone.now(), timezone.now()) + GRACE_PERIOD
        account.save(update_fields=["plan_status", "grace_until", "updated_at"])
        return True
