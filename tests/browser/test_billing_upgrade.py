"""Upgrade in real Chromium: a Free user hits a plan limit, sees the upgrade prompt, pays through
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


def _three_agent_draft(user):
    """A draft whose team is one agent larger than the Free plan allows."""
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import Agent, Criterion, LLMModel, Project, WritingSession

    seed_catalogue()
    demo = LLMModel.objects.get(provider="demo")
    project = Project.objects.create(owner=user, name="Big team")
    session = WritingSession.objects.create(project=project, title="Three voices", brief="Trees in cities.")
    for order, name in enumerate(["Writer", "Editor", "Critic"]):
        agent = Agent.objects.create(session=session, order=order, name=name, model=demo, role_prompt="Write.")
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def test_free_user_hits_a_plan_limit_and_upgrades_through_checkout(page, stripe_live_app, login):
    from billing import services

    app = stripe_live_app
    user = make_user("upgrader@example.com", password=PASSWORD)
    services.get_account(user)
    # Spend the Free credits too (a staff adjustment keeps ledger and balance in step).
    services.adjust_credits(user=user, amount=-services.get_balance(user), reason="spent", staff_user=None)
    session = _three_agent_draft(user)
    app.fake_stripe.add_price(plan="starter", amount=2900)

    login(page, app, "upgrader@example.com", PASSWORD)
    # The limit, enforced on the server when the user presses Start in the builder.
    page.goto(f"{app.url}/sessions/{session.pk}/edit/")
    page.get_by_test_id("start-session").click()
    problems = page.get_by_test_id("start-problems")
    expect(problems).to_contain_text("The Free plan allows up to 2 agents per session")
    problems.get_by_role("link", name="Upgrade your plan").click()
    expect(page.get_by_test_id("plan-starter")).to_be_visible()

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

    # With Starter's limits the same team now starts.
    page.goto(f"{app.url}/sessions/{session.pk}/edit/")
    page.get_by_test_id("start-session").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{session.pk}/$"), timeout=15_000)
    expect(page.locator("#live-session")).to_be_visible()
