"""The Stripe API calls the app makes (tests run them against tests/fakes/stripe_server.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import stripe
from djstripe.settings import djstripe_settings

from billing import services
from billing.plans import PLANS, Plan

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


_T = TypeVar("_T")


class StripeNotConfigured(Exception):
    pass


def _api_key() -> str:
    return str(djstripe_settings.STRIPE_SECRET_KEY)


def ensure_customer(*, user: User, replacing: str = "") -> str:
    """The user's Stripe customer id, created on first use (idempotent per user).

    ``replacing``: the stored customer Stripe no longer knows; a new one is created under a new
    idempotency key (the old key would make Stripe replay the dead customer for 24 hours).
    """
    account = services.get_account(user)
    if account.stripe_customer_id:
        return account.stripe_customer_id
    key = f"atelier-customer-{user.pk}" + (f"-after-{replacing}" if replacing else "")
    customer = stripe.Customer.create(
        api_key=_api_key(), email=user.email, metadata={"user_id": str(user.pk)}, idempotency_key=key
    )
    services.link_stripe_customer(user=user, customer_id=customer.id)
    return customer.id


def _customer_gone(error: stripe.StripeError, customer_id: str) -> bool:
    """Stripe's answer when a request names a customer that was deleted: 400 resource_missing."""
    return (
        isinstance(error, stripe.InvalidRequestError)
        and getattr(error, "code", None) == "resource_missing"
        and (getattr(error, "param", None) == "customer" or customer_id in str(error))
    )


def _with_customer(user: User, call: Callable[[str], _T]) -> _T:
    """Run ``call(customer_id)``; if Stripe says the stored customer is gone (deleted in the
    dashboard and its customer.deleted not processed yet), forget it, create a new one, retry once."""
    customer = ensure_customer(user=user)
    try:
        return call(customer)
    except stripe.InvalidRequestError as error:
        if not _customer_gone(error, customer):
            raise
        logger.warning("Stripe customer %s of user %s is gone; creating a new one", customer, user.pk)
        services.forget_stripe_customer(user=user, customer_id=customer)
        return call(ensure_customer(user=user, replacing=customer))


def price_id_for(plan: Plan) -> str:
    prices = stripe.Price.list(api_key=_api_key(), lookup_keys=[plan.lookup_key], active=True, limit=1)
    if not prices.data:
        raise StripeNotConfigured(f"No Stripe price for {plan.name}: run `manage.py sync_stripe_plans`.")
    return prices.data[0].id


def create_checkout_session(*, user: User, plan: Plan, success_url: str, cancel_url: str) -> str:
    """A hosted Checkout session for ``plan``; returns the URL to redirect to.

    Raises stripe.StripeError or StripeNotConfigured. A stored customer that Stripe no longer has
    is replaced (issue 8, case 19), so a customer deleted in the dashboard never blocks upgrading.
    """
    metadata = {"user_id": str(user.pk), "plan": plan.key}  # for people reading the dashboard; never trusted
    price = price_id_for(plan)

    def create(customer: str) -> stripe.checkout.Session:
        return stripe.checkout.Session.create(
            api_key=_api_key(),
            mode="subscription",
            customer=customer,
            client_reference_id=str(user.pk),
            line_items=[{"price": price, "quantity": 1}],
            subscription_data={"metadata": metadata},
            metadata=metadata,
            success_url=success_url,
            cancel_url=cancel_url,
        )

    url = _with_customer(user, create).url
    assert url is not None  # Stripe returns the URL of every session it creates (hosted pages)
    return url


def create_portal_session(*, user: User, return_url: str) -> str:
    """A Customer Portal session URL (plan switching, cancellation, payment methods)."""

    def create(customer: str) -> stripe.billing_portal.Session:
        return stripe.billing_portal.Session.create(api_key=_api_key(), customer=customer, return_url=return_url)

    url = _with_customer(user, create).url
    assert url is not None  # Stripe returns the URL of every session it creates (hosted pages)
    return url


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
