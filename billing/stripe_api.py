"""The Stripe API calls the app makes (tests run them against tests/fakes/stripe_server.py)."""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from djstripe.settings import djstripe_settings

from billing import services
from billing.plans import PLANS, Plan


class StripeNotConfigured(Exception):
    pass


def _api_key() -> str:
    return djstripe_settings.STRIPE_SECRET_KEY


def ensure_customer(*, user) -> str:
    account = services.get_account(user)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = stripe.Customer.create(
        api_key=_api_key(),
        email=user.email,
        metadata={"user_id": str(user.pk)},
        idempotency_key=f"atelier-customer-{user.pk}",
    )
    services.link_stripe_customer(user=user, customer_id=customer.id)
    return customer.id


def price_id_for(plan: Plan) -> str:
    prices = stripe.Price.list(api_key=_api_key(), lookup_keys=[plan.lookup_key], active=True, limit=1)
    if not prices.data:
        raise StripeNotConfigured(f"No Stripe price for {plan.name}: run `manage.py sync_stripe_plans`.")
    return prices.data[0].id


def create_checkout_session(*, user, plan: Plan, success_url: str, cancel_url: str) -> str:
    """A hosted Checkout session for ``plan``; returns the URL to redirect to."""
    customer = ensure_customer(user=user)
    metadata = {"user_id": str(user.pk), "plan": plan.key}
    session = stripe.checkout.Session.create(
        api_key=_api_key(),
        mode="subscription",
        customer=customer,
        client_reference_id=str(user.pk),
        line_items=[{"price": price_id_for(plan), "quantity": 1}],
        subscription_data={"metadata": metadata},
        metadata=metadata,
        success_url=success_url,
        cancel_url=cancel_url,
    )
    return session.url


def create_portal_session(*, user, return_url: str) -> str:
    customer = ensure_customer(user=user)
    session = stripe.billing_portal.Session.create(api_key=_api_key(), customer=customer, return_url=return_url)
    return session.url


@dataclass
class SyncAction:
    plan: str
    action: str
    detail: str


def sync_plans(*, dry_run: bool = False) -> list[SyncAction]:
    """Create or update one Product and one monthly Price (by lookup key) per paid plan.

    Stripe prices are immutable: a changed amount creates a new Price that takes over the lookup
    key (transfer_lookup_key) and the old one is deactivated, so existing subscribers keep theirs.
    """
    key = _api_key()
    actions: list[SyncAction] = []
    for plan in PLANS.values():
        if not plan.is_paid:
            continue
        try:
            product = stripe.Product.retrieve(plan.product_id, api_key=key)
        except stripe.InvalidRequestError:
            product = None
        if product is None:
            actions.append(SyncAction(plan.key, "create product", plan.product_id))
            if not dry_run:
                stripe.Product.create(
                    api_key=key, id=plan.product_id, name=f"Atelier {plan.name}", metadata={"plan": plan.key}
                )
        elif product.name != f"Atelier {plan.name}" or not product.active:
            actions.append(SyncAction(plan.key, "update product", plan.product_id))
            if not dry_run:
                stripe.Product.modify(plan.product_id, api_key=key, name=f"Atelier {plan.name}", active=True)
        prices = stripe.Price.list(api_key=key, lookup_keys=[plan.lookup_key], active=True, limit=1).data
        current = prices[0] if prices else None
        if current is not None and current.unit_amount == plan.price_usd_cents and current.currency == "usd":
            actions.append(SyncAction(plan.key, "unchanged", current.id))
            continue
        actions.append(SyncAction(plan.key, "create price", f"{plan.lookup_key} = ${plan.price_usd}/month"))
        if dry_run:
            continue
        stripe.Price.create(
            api_key=key,
            product=plan.product_id,
            currency="usd",
            unit_amount=plan.price_usd_cents,
            recurring={"interval": "month"},
            lookup_key=plan.lookup_key,
            transfer_lookup_key=True,
            metadata={"plan": plan.key},
        )
        if current is not None:
            stripe.Price.modify(current.id, api_key=key, active=False)
    return actions
