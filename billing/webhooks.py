"""Stripe webhook processing (dj-stripe calls handle_webhook_trigger after verifying the signature).

dj-stripe's view checks the ``stripe-signature`` header against the WebhookEndpoint's secret with
a 300 s tolerance and answers 400 otherwise; only verified triggers reach this callback. Every
handler is idempotent on a Stripe id (``stripe:<invoice id>`` for credits), so replays,
out-of-order and concurrent deliveries grant exactly once. Events are applied by the object's
state and the event's creation time, never by arrival order: a subscription event older than the
last one applied is ignored, a payment failure for an invoice already paid is ignored, a paid
invoice changes the plan only if no newer subscription state has been applied. The plan always
comes from the prices paid for (billing.plans.plan_for_price), never from metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string

from billing import services
from billing.plans import PERIOD_BILLING_REASONS, Plan, credits_for_invoice, plan_for_price

logger = logging.getLogger(__name__)


def on_webhook_pre_process(sender: object, instance: Any, **kwargs: Any) -> None:
    """djstripe.signals.webhook_pre_process: run our processing in place of dj-stripe's.

    dj-stripe deprecated DJSTRIPE_WEBHOOK_EVENT_CALLBACK (its check warns under --deploy); the signal
    fires inside the same validated, atomic block, and replacing `process` on this one trigger keeps
    dj-stripe from fetching and syncing the event a second time.
    """
    handle_webhook_trigger(instance)
    instance.process = lambda save=True, api_key=None: None


def handle_webhook_trigger(trigger: Any, api_key: str | None = None) -> None:
    """Our credit logic, then dj-stripe's own model sync (best effort)."""
    event = trigger.json_body
    process_event(event)
    try:
        # Mirrors invoices etc. into dj-stripe's tables (the billing page lists them). It calls the
        # Stripe API; a failure there must not undo or block the credits, which are already exact.
        with transaction.atomic():
            trigger.process(save=False, api_key=api_key)
    except Exception:
        logger.warning("dj-stripe could not sync event %s", event.get("id"), exc_info=True)
    trigger.processed = True


def _ts(value: int | str | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(value), tz=dt.UTC) if value else None


def _price_plan(price: object, product: str = "") -> Plan | None:
    """Plan from a Price object, or a bare price id (+ product) as invoice lines carry them."""
    if isinstance(price, dict):
        return plan_for_price(price)
    if not isinstance(price, str) or not price:
        return plan_for_price(product_id=product)
    if product:
        return plan_for_price(price_id=price, product_id=product)
    from djstripe.models import Price  # a bare id: dj-stripe's mirror of our prices knows its product

    row = Price.objects.filter(id=price).first()
    if row is None:
        return None
    return plan_for_price({"lookup_key": row.lookup_key, "product": row.product_id})


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    # API 2025-03-31 and later: parent.subscription_details; older: top-level subscription.
    details = ((invoice.get("parent") or {}).get("subscription_details")) or invoice.get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription") or ""
    if isinstance(subscription, dict):
        subscription = subscription.get("id", "")
    return subscription, details.get("metadata") or {}


def invoice_plan(invoice: dict[str, Any]) -> Plan | None:
    """The plan of the invoice's largest positive line (after a switch: the new plan's proration)."""
    best: tuple[int, Plan] | None = None
    for line in (invoice.get("lines") or {}).get("data", []):
        details = (line.get("pricing") or {}).get("price_details") or {}
        plan = _price_plan(line.get("price") or details.get("price"), details.get("product") or "")
        amount = int(line.get("amount") or 0)
        if plan is not None and amount >= 0 and (best is None or amount > best[0]):
            best = (amount, plan)
    return best[1] if best else None


def _event_at(event: dict[str, Any]) -> dt.datetime:
    """When Stripe created the event: the order events are applied in (delivery order is arbitrary)."""
    return _ts(event.get("created")) or dt.datetime.now(tz=dt.UTC)


def _customer_id(obj: dict[str, Any]) -> str:
    customer = obj.get("customer") or ""
    return customer.get("id", "") if isinstance(customer, dict) else customer


def process_event(event: dict[str, Any]) -> str:
    kind = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    handler = HANDLERS.get(kind)
    if handler is None:
        return "ignored"
    outcome = handler(event, obj)
    logger.info("Stripe %s %s: %s", kind, event.get("id"), outcome)
    return outcome


def on_checkout_completed(event: dict[str, Any], session: dict[str, Any]) -> str:
    if session.get("mode") != "subscription":
        return "not a subscription"
    account = services.account_for_stripe(customer_id=_customer_id(session), user_id=session.get("client_reference_id"))
    if account is None:
        return "unknown customer"
    subscription = session.get("subscription") or ""
    if isinstance(subscription, dict):
        subscription = subscription.get("id", "")
    linked = services.link_stripe_customer(
        user=account.user, customer_id=_customer_id(session), subscription_id=subscription, event_at=_event_at(event)
    )
    return "linked" if linked else "stale"


def on_invoice_paid(event: dict[str, Any], invoice: dict[str, Any]) -> str:
    subscription, metadata = _invoice_subscription(invoice)
    account = services.account_for_stripe(customer_id=_customer_id(invoice), user_id=metadata.get("user_id"))
    if account is None:
        return "unknown customer"
    plan = invoice_plan(invoice)  # from the prices paid for, never from metadata
    if plan is None:
        return "no plan on invoice"
    period_end = None
    for line in (invoice.get("lines") or {}).get("data", []):
        period_end = _ts((line.get("period") or {}).get("end")) or period_end
    billing_reason = invoice.get("billing_reason") or ""
    amount_paid = int(invoice.get("amount_paid") or 0)
    credits = credits_for_invoice(plan=plan, billing_reason=billing_reason, amount_paid_cents=amount_paid)
    granted = services.apply_paid_invoice(
        user=account.user,
        invoice_id=invoice["id"],
        plan=plan,
        credits=credits,
        starts_period=billing_reason in PERIOD_BILLING_REASONS,
        subscription_id=subscription,
        period_end=period_end,
        event_at=_event_at(event),
        description=(
            f"{plan.name} plan credits, invoice {invoice.get('number') or invoice['id']}"
            f" ({billing_reason or 'invoice'}, ${amount_paid / 100:.2f} paid)"
        ),
    )
    return "granted" if granted else "already granted"


def on_invoice_payment_failed(event: dict[str, Any], invoice: dict[str, Any]) -> str:
    _, metadata = _invoice_subscription(invoice)
    account = services.account_for_stripe(customer_id=_customer_id(invoice), user_id=metadata.get("user_id"))
    if account is None:
        return "unknown customer"
    if invoice.get("status") in {"paid", "void"} or invoice.get("paid") is True:
        return "invoice settled"
    # Stripe delivers events unordered: a failure notice for an invoice we already saw paid (a retry
    # succeeded first) is history, and so is one older than the subscription state we applied.
    if not services.start_grace_period(user=account.user, invoice_id=invoice.get("id", ""), event_at=_event_at(event)):
        return "stale or already in grace"
    user = account.user
    account.refresh_from_db()
    context = {"user": user, "account": account, "site_url": settings.SITE_URL}
    transaction.on_commit(
        lambda: send_mail(
            subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}Your payment failed",
            message=render_to_string("billing/email/payment_failed.txt", context),
            from_email=None,
            recipient_list=[user.email],
        )
    )
    return "grace started"


def on_customer_deleted(event: dict[str, Any], customer: dict[str, Any]) -> str:
    """The Stripe customer is gone (deleted in the dashboard): forget it, its subscriptions ended with it."""
    customer_id = customer.get("id", "")
    account = services.account_for_stripe(customer_id=customer_id)
    if account is None:
        return "unknown customer"
    forgotten = services.forget_stripe_customer(user=account.user, customer_id=customer_id, event_at=_event_at(event))
    return "forgotten" if forgotten else "not linked"


def on_subscription_changed(event: dict[str, Any], subscription: dict[str, Any]) -> str:
    metadata = subscription.get("metadata") or {}
    account = services.account_for_stripe(customer_id=_customer_id(subscription), user_id=metadata.get("user_id"))
    if account is None:
        return "unknown customer"
    items = (subscription.get("items") or {}).get("data", [])
    plan = None  # from the items' prices only: the portal changes the price, never the metadata
    period_end = _ts(subscription.get("current_period_end"))
    for item in items:
        item_plan = _price_plan(item.get("price"))
        if item_plan is not None and (plan is None or item_plan.rank > plan.rank):
            plan = item_plan
        period_end = _ts(item.get("current_period_end")) or period_end
    return services.apply_subscription_state(
        user=account.user,
        subscription_id=subscription.get("id", ""),
        plan=plan,
        status=subscription.get("status", ""),
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        period_end=period_end,
        event_at=_event_at(event),
        deleted=event.get("type") == "customer.subscription.deleted",
    )


HANDLERS = {
    "checkout.session.completed": on_checkout_completed,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_succeeded": on_invoice_paid,  # same key as invoice.paid: grants once
    "invoice.payment_failed": on_invoice_payment_failed,
    "customer.subscription.created": on_subscription_changed,
    "customer.subscription.updated": on_subscription_changed,
    "customer.subscription.deleted": on_subscription_changed,
    "customer.deleted": on_customer_deleted,
}
