from __future__ import annotations

from decimal import Decimal

import pytest


@pytest.fixture
def sonnet(db):
    from orchestration.models import LLMModel

    return LLMModel.objects.create(
        provider="anthropic",
        model_id="test-sonnet",
        display_name="Test Sonnet",
        context_window=200_000,
        input_price_per_mtok=Decimal("3.00"),
        cached_input_price_per_mtok=Decimal("0.30"),
        output_price_per_mtok=Decimal("15.00"),
        credit_multiplier=Decimal("1.25"),
    )


@pytest.fixture
def cheap_model(db):
    from orchestration.models import LLMModel

    return LLMModel.objects.create(
        provider="openai",
        model_id="test-mini",
        display_name="Test Mini",
        context_window=128_000,
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
        credit_multiplier=Decimal("1.00"),
    )


@pytest.fixture
def demo_model(db):
    from orchestration.models import LLMModel

    return LLMModel.objects.create(
        provider="demo",
        model_id="test-demo",
        display_name="Test Demo",
        context_window=100_000,
        credit_multiplier=Decimal("1.00"),
    )


@pytest.fixture
def funded(owner):
    """The owner with exactly 1,000 credits (the Free grant topped up by a grant)."""
    from billing import services

    services.get_account(owner)
    balance = services.get_balance(owner)
    services.grant_credits(user=owner, amount=1000 - balance, key="test:topup")
    assert services.get_balance(owner) == 1000
    return owner


CUSTOMER = "cus_TQx8m2LfY0aB1c"
WEBHOOK_SECRET = "whsec_test_atelier_billing_secret"


@pytest.fixture
def webhook_endpoint(db, fake_stripe):
    from djstripe.models import WebhookEndpoint

    return WebhookEndpoint.objects.create(
        id="we_test_atelier",
        url="http://testserver/stripe/webhook/",
        secret=WEBHOOK_SECRET,
        livemode=False,
        api_version="2026-05-27.dahlia",
        enabled_events=["*"],
        status="enabled",
    )


@pytest.fixture
def customer_owner(owner):
    """The owner, linked to the Stripe customer used in the payload fixtures."""
    from billing import services
    from billing.models import CreditAccount

    services.get_account(owner)
    CreditAccount.objects.filter(user=owner).update(stripe_customer_id=CUSTOMER)
    return owner
