"""Upgrade in real Chromium: a Free user out of credits sees the upgrade prompt, pays through
(fake) Stripe Checkout, the signed webhooks reach the live server, and the billing page shows
the new plan and balance.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_billing_upgrade.py
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import make_user
from tests.fakes.stripe_server import FakeStripe

pytestmark = pytest.mark.browser

PASSWORD = "violet-harbour-lantern-42"
SECRET = "whsec_browser_test_secret"


@pytest.fixture
def stripe_live_app(transactional_db):
    """daphne talking to a local fake Stripe, which delivers signed webhooks back to it."""
    from djstripe.models import WebhookEndpoint

    from tests.live import LiveApp, start_web

    fake = FakeStripe().start()
    endpoint = WebhookEndpoint.objects.create(
        id="we_browser_test",
        url="http://127.0.0.1/stripe/webhook/",
        secret=SECRET,
        livemode=False,
        api_version="2026-05-27.dahlia",
        enabled_events=["*"],
        status="enabled",
    )
    web, url = start_web(
        STRIPE_API_BASE=fake.url,
        STRIPE_TEST_SECRET_KEY="sk_test_atelier_fake_key",
        CSP_EXTRA_FORM_ACTION=fake.url,
    )
    fake.webhook_url = f"{url}/stripe/webhook/{endpoint.djstripe_uuid}/"
    fake.webhook_secret = SECRET
    app = LiveApp(url=url, web=web, worker=None)
    app.fake_stripe = fake
    yield app
    app.stop()
    fake.stop()


def test_free_user_out_of_credits_upgrades_through_checkout(page, stripe_live_app, login):
    from billing import services

    app = stripe_live_app
    user = make_user("upgrader@example.com", password=PASSWORD)
    services.get_account(user)
    # Spend the Free credits (a staff adjustment keeps ledger and balance in step).
    services.adjust_credits(user=user, amount=-services.get_balance(user), reason="spent", staff_user=None)
    app.fake_stripe.add_price(plan="starter", amount=2900)

    login(page, app, "upgrader@example.com", PASSWORD)
    page.goto(app.url + "/billing/?reason=out_of_credits")
    expect(page.get_by_test_id("out-of-credits")).to_contain_text("Out of credits")
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")

    page.get_by_test_id("upgrade-starter").click()
    expect(page.get_by_role("heading", name="Fake Stripe Checkout")).to_be_visible()
    expect(page.get_by_text("$29.00 / month")).to_be_visible()
    page.get_by_role("button", name="Pay and subscribe").click()

    page.wait_for_url(re.compile(r"/billing/\?checkout=success$"))
    assert app.fake_stripe.webhook_responses == [200, 200, 200]
    expect(page.get_by_test_id("current-plan")).to_have_text("Starter")
    expect(page.get_by_test_id("balance")).to_have_text("20,000 credits")
    expect(page.get_by_test_id("out-of-credits")).to_have_count(0)
