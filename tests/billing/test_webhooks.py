"""Stripe webhooks through dj-stripe's endpoint, with real payload shapes signed like Stripe does."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from django.core import mail
from django.db import connections

from billing import services
from billing.models import CreditAccount, CreditEntry, EntryKind, PlanStatus
from billing.plans import PLANS
from tests.billing.conftest import WEBHOOK_SECRET
from tests.fakes.stripe_server import load_event, sign

FREE_CREDITS = PLANS["free"].monthly_credits
STARTER_CREDITS = PLANS["starter"].monthly_credits


def _event(name: str, user) -> dict:
    event = load_event(name)
    obj = event["data"]["object"]
    for holder in (obj, (obj.get("parent") or {}).get("subscription_details") or {}):
        if "metadata" in holder and "user_id" in holder["metadata"]:
            holder["metadata"]["user_id"] = str(user.pk)
    if "client_reference_id" in obj:
        obj["client_reference_id"] = str(user.pk)
    return event


def _post(client, endpoint, event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    body = json.dumps(event)
    return client.post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/",
        data=body,
        content_type="application/json",
        headers={"stripe-signature": sign(body, secret, timestamp)},
    )


def _account(user) -> CreditAccount:
    return CreditAccount.objects.get(user=user)


def test_paid_invoice_grants_plan_credits_once_when_replayed_three_times(client, webhook_endpoint, customer_owner):
    event = _event("invoice.paid", customer_owner)
    for _ in range(3):
        assert _post(client, webhook_endpoint, event).status_code == 200
    account = _account(customer_owner)
    assert account.balance == FREE_CREDITS + STARTER_CREDITS
    assert account.plan == "starter"
    assert (
        CreditEntry.objects.filter(
            kind=EntryKind.PURCHASE, idempotency_key=f"stripe:{event['data']['object']['id']}"
        ).count()
        == 1
    )


def test_events_out_of_order_grant_once_and_end_on_the_paid_plan(client, webhook_endpoint, owner):
    # No customer link yet: the invoice arrives before checkout.session.completed and is matched by metadata.
    events = [_event(n, owner) for n in ("invoice.paid", "customer.subscription.updated", "checkout.session.completed")]
    sequence = events * 3
    random.Random(5).shuffle(sequence)
    for event in sequence:
        assert _post(client, webhook_endpoint, event).status_code == 200
    account = _account(owner)
    assert (account.plan, account.balance) == ("starter", FREE_CREDITS + STARTER_CREDITS)
    assert account.stripe_customer_id == "cus_TQx8m2LfY0aB1c"
    assert account.stripe_subscription_id == "sub_1RkT0ZLsWj2N8qZ0Sub1aB2c"


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_the_same_invoice_grant_once(webhook_endpoint, customer_owner):
    from django.test import Client

    event = _event("invoice.paid", customer_owner)
    statuses: list[int] = []

    def deliver():
        try:
            statuses.append(_post(Client(), webhook_endpoint, event).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200, 200]
    assert services.get_balance(customer_owner) == FREE_CREDITS + STARTER_CREDITS


def test_bad_signature_is_rejected_and_grants_nothing(client, webhook_endpoint, customer_owner):
    response = _post(client, webhook_endpoint, _event("invoice.paid", customer_owner), secret="whsec_wrong")
    assert response.status_code == 400
    assert services.get_balance(customer_owner) == FREE_CREDITS


def test_stale_signature_over_300_seconds_is_rejected(client, webhook_endpoint, customer_owner):
    response = _post(client, webhook_endpoint, _event("invoice.paid", customer_owner), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert services.get_balance(customer_owner) == FREE_CREDITS


def test_missing_signature_is_rejected(client, webhook_endpoint, customer_owner):
    body = json.dumps(_event("invoice.paid", customer_owner))
    response = client.post(
        f"/stripe/webhook/{webhook_endpoint.djstripe_uuid}/", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert services.get_balance(customer_owner) == FREE_CREDITS


def test_failed_payment_starts_grace_and_emails_the_user_once(
    client, webhook_endpoint, customer_owner, django_capture_on_commit_callbacks
):
    _post(client, webhook_endpoint, _event("invoice.paid", customer_owner))
    event = _event("invoice.payment_failed", customer_owner)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            assert _post(client, webhook_endpoint, event).status_code == 200
    account = _account(customer_owner)
    assert account.plan_status == PlanStatus.GRACE and account.grace_until is not None
    assert account.plan == "starter"  # kept during the grace period
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["owner@example.com"]
    assert "payment" in mail.outbox[0].subject.lower()
    assert account.balance == FREE_CREDITS + STARTER_CREDITS  # a failed invoice grants nothing


def test_downgrade_waits_for_period_end_and_cancellation_returns_to_free(client, webhook_endpoint, customer_owner):
    CreditAccount.objects.filter(user=customer_owner).update(plan="pro")
    update = _event("customer.subscription.updated", customer_owner)  # Starter price
    _post(client, webhook_endpoint, update)
    account = _account(customer_owner)
    assert (account.plan, account.pending_plan) == ("pro", "starter")
    assert account.current_period_end is not None

    services.apply_due_downgrades(now=account.current_period_end)
    assert _account(customer_owner).plan == "starter"

    _post(client, webhook_endpoint, _event("customer.subscription.deleted", customer_owner))
    _post(client, webhook_endpoint, update)  # an older update arriving late changes nothing
    account = _account(customer_owner)
    assert (account.plan, account.pending_plan, account.stripe_subscription_id) == ("free", "", "")


def test_cancel_at_period_end_marks_a_pending_move_to_free(client, webhook_endpoint, customer_owner):
    event = _event("customer.subscription.updated", customer_owner)
    event["data"]["object"]["cancel_at_period_end"] = True
    _post(client, webhook_endpoint, event)
    account = _account(customer_owner)
    assert (account.plan, account.pending_plan) == ("starter", "free")


def test_invoice_for_an_unknown_customer_grants_nothing(client, webhook_endpoint, owner):
    event = load_event("invoice.paid")
    event["data"]["object"]["customer"] = "cus_nobody"
    event["data"]["object"]["parent"]["subscription_details"]["metadata"] = {}
    assert _post(client, webhook_endpoint, event).status_code == 200
    assert not CreditEntry.objects.filter(kind=EntryKind.PURCHASE).exists()
