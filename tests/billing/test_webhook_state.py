"""Billing by what was paid and when (issue 9, cases 5-6; issue 8, cases 18-19).

Signed events through dj-stripe's webhook endpoint (real payload shapes from tests/fixtures/stripe),
and checkout against the offline Stripe fake.
"""

from __future__ import annotations

import copy

import pytest
from django.core import mail

from billing import services
from billing.models import CreditAccount, CreditEntry, EntryKind, PlanStatus
from billing.plans import PLANS
from tests.billing.test_webhooks import _account, _event, _post

FREE = PLANS["free"].monthly_credits
STARTER = PLANS["starter"].monthly_credits
PRO = PLANS["pro"].monthly_credits
PRICES = {"starter": ("price_1RkSzzLsWj2N8qZ0Starter", 2900), "pro": ("price_1RkSzzLsWj2N8qZ0ProPlan", 7900)}


def _invoice(user, *, invoice_id: str, plan: str, metadata_plan: str, amount: int, reason: str, created: int) -> dict:
    """An invoice.paid event whose line is for ``plan``'s price while the metadata still says ``metadata_plan``."""
    event = _event("invoice.paid", user)
    event["id"] = f"evt_{invoice_id}"
    event["created"] = created
    invoice = event["data"]["object"]
    invoice.update(id=invoice_id, billing_reason=reason, amount_paid=amount, amount_due=amount, total=amount)
    invoice["parent"]["subscription_details"]["metadata"]["plan"] = metadata_plan
    line = invoice["lines"]["data"][0]
    line.update(amount=amount, invoice=invoice_id)
    line["metadata"] = {"plan": metadata_plan, "user_id": str(user.pk)}
    line["pricing"]["price_details"] = {"price": PRICES[plan][0], "product": f"atelier_{plan}"}
    return event


def _subscription(user, *, plan: str, metadata_plan: str, created: int) -> dict:
    event = _event("customer.subscription.updated", user)
    event["id"] = f"evt_sub_{created}"
    event["created"] = created
    subscription = event["data"]["object"]
    subscription["metadata"]["plan"] = metadata_plan
    price = subscription["items"]["data"][0]["price"]
    price.update(
        id=PRICES[plan][0], lookup_key=f"atelier_{plan}_monthly", product=f"atelier_{plan}", unit_amount=PRICES[plan][1]
    )
    price["metadata"] = {"plan": metadata_plan}
    return event


def _granted(invoice_id: str) -> int:
    return CreditEntry.objects.get(idempotency_key=f"stripe:{invoice_id}", kind=EntryKind.PURCHASE).amount


T0 = 1_767_225_600  # 2026-01-01, the fixtures' time


# --- case 5: the plan comes from the price paid, not from metadata


def test_a_pro_subscriber_who_switches_to_starter_is_billed_and_credited_as_starter(
    client, webhook_endpoint, customer_owner
):
    CreditAccount.objects.filter(user=customer_owner).update(plan="pro")
    # The portal switches the price; the subscription metadata still says "pro".
    _post(
        client, webhook_endpoint, _subscription(customer_owner, plan="starter", metadata_plan="pro", created=T0 + 100)
    )
    account = _account(customer_owner)
    assert (account.plan, account.pending_plan) == ("pro", "starter")  # until the period ends

    services.apply_due_downgrades(now=account.current_period_end)
    invoice = _invoice(
        customer_owner,
        invoice_id="in_cycle_starter",
        plan="starter",
        metadata_plan="pro",
        amount=2900,
        reason="subscription_cycle",
        created=T0 + 31 * 86400,
    )
    assert _post(client, webhook_endpoint, invoice).status_code == 200
    account = _account(customer_owner)
    assert account.plan == "starter"
    assert _granted("in_cycle_starter") == STARTER
    assert account.balance == FREE + STARTER


def test_a_starter_subscriber_paying_for_pro_gets_pro(client, webhook_endpoint, customer_owner):
    CreditAccount.objects.filter(user=customer_owner).update(plan="starter")
    invoice = _invoice(
        customer_owner,
        invoice_id="in_cycle_pro",
        plan="pro",
        metadata_plan="starter",
        amount=7900,
        reason="subscription_cycle",
        created=T0,
    )
    _post(client, webhook_endpoint, invoice)
    account = _account(customer_owner)
    assert (account.plan, account.balance) == ("pro", FREE + PRO)


def test_a_subscription_whose_price_is_not_ours_changes_no_plan(client, webhook_endpoint, customer_owner):
    event = _subscription(customer_owner, plan="pro", metadata_plan="pro", created=T0)
    price = event["data"]["object"]["items"]["data"][0]["price"]
    price.update(lookup_key=None, product="prod_someone_else")
    _post(client, webhook_endpoint, event)
    assert _account(customer_owner).plan == "free"


# --- case 6: monthly credits for period invoices only; prorations in proportion to what was paid


def test_a_proration_invoice_grants_credits_in_proportion_to_the_amount_paid(client, webhook_endpoint, customer_owner):
    CreditAccount.objects.filter(user=customer_owner).update(plan="pro")
    invoice = _invoice(
        customer_owner,
        invoice_id="in_proration",
        plan="pro",
        metadata_plan="pro",
        amount=167,
        reason="subscription_update",
        created=T0,
    )
    _post(client, webhook_endpoint, invoice)
    assert _granted("in_proration") == 167 * PRO // 7900 == 1268
    assert _account(customer_owner).balance == FREE + 1268


@pytest.mark.parametrize("reason", ["subscription_create", "subscription_cycle", "subscription_update", "manual"])
def test_a_zero_dollar_invoice_grants_nothing(client, webhook_endpoint, customer_owner, reason):
    invoice = _invoice(
        customer_owner,
        invoice_id=f"in_zero_{reason}",
        plan="pro",
        metadata_plan="pro",
        amount=0,
        reason=reason,
        created=T0,
    )
    assert _post(client, webhook_endpoint, invoice).status_code == 200
    assert _granted(f"in_zero_{reason}") == 0
    assert _account(customer_owner).balance == FREE


def test_a_proration_between_plans_credits_only_the_new_plans_share(client, webhook_endpoint, customer_owner):
    # Starter -> Pro mid-cycle: a credit line for unused Starter time and a charge for Pro's remainder.
    CreditAccount.objects.filter(user=customer_owner).update(plan="starter")
    event = _invoice(
        customer_owner,
        invoice_id="in_switch",
        plan="pro",
        metadata_plan="starter",
        amount=3950,
        reason="subscription_update",
        created=T0,
    )
    invoice = event["data"]["object"]
    unused = copy.deepcopy(invoice["lines"]["data"][0])
    unused.update(id="il_unused_starter", amount=-1450)
    unused["pricing"]["price_details"] = {"price": PRICES["starter"][0], "product": "atelier_starter"}
    invoice["lines"]["data"].insert(0, unused)
    invoice["lines"]["data"][1]["amount"] = 3950
    invoice["amount_paid"] = 2500
    _post(client, webhook_endpoint, event)
    account = _account(customer_owner)
    assert account.plan == "pro"
    assert _granted("in_switch") == 2500 * PRO // 7900 == 18987


# --- issue 8 case 18: events by the object's state and time, not arrival order


def test_a_late_payment_failed_for_a_paid_invoice_changes_nothing(
    client, webhook_endpoint, customer_owner, django_capture_on_commit_callbacks
):
    paid = _invoice(
        customer_owner,
        invoice_id="in_retry_ok",
        plan="starter",
        metadata_plan="starter",
        amount=2900,
        reason="subscription_cycle",
        created=T0 + 600,
    )
    failed = _event("invoice.payment_failed", customer_owner)
    failed["created"] = T0 + 60  # the first attempt failed; the retry succeeded; Stripe delivered late
    failed["data"]["object"]["id"] = "in_retry_ok"
    with django_capture_on_commit_callbacks(execute=True):
        _post(client, webhook_endpoint, paid)
        assert _post(client, webhook_endpoint, failed).status_code == 200
    account = _account(customer_owner)
    assert account.plan_status == PlanStatus.ACTIVE and account.grace_until is None
    assert mail.outbox == []
    assert services.effective_plan(account).key == "starter"


def test_a_failure_older_than_the_subscription_state_is_ignored(
    client, webhook_endpoint, customer_owner, django_capture_on_commit_callbacks
):
    _post(client, webhook_endpoint, _subscription(customer_owner, plan="starter", metadata_plan="", created=T0 + 900))
    failed = _event("invoice.payment_failed", customer_owner)
    failed["created"] = T0 + 100
    with django_capture_on_commit_callbacks(execute=True):
        _post(client, webhook_endpoint, failed)
    assert _account(customer_owner).plan_status == PlanStatus.ACTIVE
    assert mail.outbox == []


def test_a_failure_then_its_payment_ends_grace_but_an_older_payment_does_not(
    client, webhook_endpoint, customer_owner, django_capture_on_commit_callbacks
):
    CreditAccount.objects.filter(user=customer_owner).update(plan="starter")
    failed = _event("invoice.payment_failed", customer_owner)  # in_1RkT9a..., created 1769904300
    created = failed["created"]
    with django_capture_on_commit_callbacks(execute=True):
        _post(client, webhook_endpoint, failed)
    assert _account(customer_owner).plan_status == PlanStatus.GRACE
    assert len(mail.outbox) == 1

    older = _invoice(
        customer_owner,
        invoice_id="in_last_month",
        plan="starter",
        metadata_plan="starter",
        amount=2900,
        reason="subscription_cycle",
        created=created - 30 * 86400,
    )
    _post(client, webhook_endpoint, older)
    assert _account(customer_owner).plan_status == PlanStatus.GRACE  # last month's payment is no news

    retried = _invoice(
        customer_owner,
        invoice_id=failed["data"]["object"]["id"],
        plan="starter",
        metadata_plan="starter",
        amount=2900,
        reason="subscription_cycle",
        created=created + 3600,
    )
    _post(client, webhook_endpoint, retried)
    account = _account(customer_owner)
    assert account.plan_status == PlanStatus.ACTIVE and account.grace_until is None


def test_a_late_checkout_completed_does_not_revive_an_ended_subscription(client, webhook_endpoint, customer_owner):
    deleted = _event("customer.subscription.deleted", customer_owner)
    _post(client, webhook_endpoint, deleted)
    checkout = _event("checkout.session.completed", customer_owner)
    checkout["created"] = deleted["created"] - 3600
    _post(client, webhook_endpoint, checkout)
    assert _account(customer_owner).stripe_subscription_id == ""


# --- issue 8 case 19: a customer deleted in the Stripe dashboard


def _checkout(client, plan: str = "starter"):
    return client.post("/billing/checkout/", {"plan": plan})


def test_customer_deleted_is_forgotten_and_checkout_creates_a_new_customer(
    client, owner, webhook_endpoint, fake_stripe
):
    fake_stripe.add_price(plan="starter", amount=2900)
    client.force_login(owner)
    assert _checkout(client).status_code == 302
    dead = _account(owner).stripe_customer_id
    assert dead in fake_stripe.customers

    customer = fake_stripe.customers[dead]
    fake_stripe.delete_customer(dead)  # no webhook URL configured: delivered by hand below
    event = {
        "id": "evt_customer_deleted_1",
        "object": "event",
        "type": "customer.deleted",
        "created": T0 + 10**8,
        "livemode": False,
        "api_version": "2026-05-27.dahlia",
        "data": {"object": {**customer, "deleted": True}},
    }
    assert _post(client, webhook_endpoint, event).status_code == 200
    assert _account(owner).stripe_customer_id == ""

    response = _checkout(client)
    assert response.status_code == 302 and response["Location"].startswith(fake_stripe.url + "/c/pay/")
    fresh = _account(owner).stripe_customer_id
    assert fresh and fresh != dead and fresh in fake_stripe.customers
    assert fake_stripe.calls("POST", "/v1/checkout/sessions")[-1]["customer"] == fresh


def test_checkout_recovers_when_stripe_says_the_stored_customer_is_gone(client, owner, fake_stripe):
    fake_stripe.add_price(plan="pro", amount=7900)
    client.force_login(owner)
    _checkout(client, "pro")
    dead = _account(owner).stripe_customer_id
    fake_stripe.customers.pop(dead)  # deleted in the dashboard; customer.deleted not processed (yet)

    response = _checkout(client, "pro")
    assert response.status_code == 302, "Payments are not available right now"
    assert response["Location"].startswith(fake_stripe.url + "/c/pay/")
    fresh = _account(owner).stripe_customer_id
    assert fresh != dead and fresh in fake_stripe.customers
    sessions = fake_stripe.calls("POST", "/v1/checkout/sessions")
    assert [s["customer"] for s in sessions[-2:]] == [dead, fresh]


def test_the_portal_recovers_too(client, owner, fake_stripe):
    client.force_login(owner)
    client.post("/billing/portal/")
    dead = _account(owner).stripe_customer_id
    fake_stripe.customers.pop(dead)
    response = client.post("/billing/portal/")
    assert response.status_code == 302 and response["Location"].startswith(fake_stripe.url + "/p/session/")
    assert _account(owner).stripe_customer_id not in ("", dead)


def test_other_stripe_errors_still_show_a_clear_message(client, owner, fake_stripe):
    client.force_login(owner)
    response = client.post("/billing/checkout/", {"plan": "pro"}, follow=True)  # no price synced
    assert "Payments are not available right now" in response.content.decode()
