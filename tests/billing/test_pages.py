from __future__ import annotations

from billing import services
from billing.models import CreditAccount
from tests.conftest import make_user


def test_pricing_page_is_public_and_lists_the_three_plans(client):
    response = client.get("/billing/pricing/")
    assert response.status_code == 200
    for text in ("Free", "Starter", "$29", "Pro", "$79", "77 credits"):
        assert text in response.content.decode()


def test_billing_page_shows_plan_balance_and_upgrade_buttons(owner_client, owner):
    response = owner_client.get("/billing/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "500 credits" in body and 'data-testid="upgrade-starter"' in body and "<svg" in body
    assert 'style="' not in body


def test_billing_page_shows_out_of_credits(owner_client, owner):
    services.get_account(owner)
    CreditAccount.objects.filter(user=owner).update(balance=0)
    assert "Out of credits" in owner_client.get("/billing/").content.decode()


def test_billing_page_usage_history_only_shows_own_sessions(owner_client, owner, cheap_model):
    from orchestration.models import Agent, Project, Turn, WritingSession

    project = Project.objects.create(owner=owner, name="Mine")
    session = WritingSession.objects.create(project=project, title="My essay", brief="b")
    agent = Agent.objects.create(session=session, name="W", model=cheap_model, role_prompt="w")
    turn = Turn.objects.create(session=session, round=1, agent=agent, model_used="Test Mini")
    services.reserve_credits(user=owner, amount=50, key=f"turn:{turn.pk}:reserve", session_id=session.pk)
    services.settle_credits(
        user=owner, reservation_key=f"turn:{turn.pk}:reserve", actual=12, key=f"turn:{turn.pk}:settle"
    )
    other = make_user("other@example.com")
    other_project = Project.objects.create(owner=other, name="Theirs")
    secret = WritingSession.objects.create(project=other_project, title="Secret title", brief="b")
    # A ledger row pointing at someone else's session id must not reveal its title.
    services.reserve_credits(user=owner, amount=1, key="x:reserve", session_id=secret.pk)
    services.settle_credits(user=owner, reservation_key="x:reserve", actual=1, key="x:settle")
    body = owner_client.get("/billing/").content.decode()
    assert "My essay" in body and "Test Mini" in body
    assert "Secret title" not in body


def test_billing_page_requires_login(client):
    assert client.get("/billing/").status_code == 302


def test_checkout_redirects_to_the_stripe_session(owner_client, owner, fake_stripe):
    fake_stripe.add_price(plan="starter", amount=2900)
    response = owner_client.post("/billing/checkout/", {"plan": "starter"})
    assert response.status_code == 302
    assert response["Location"].startswith(fake_stripe.url + "/c/pay/cs_test_")
    (params,) = fake_stripe.calls("POST", "/v1/checkout/sessions")
    assert params["mode"] == "subscription"
    assert params["client_reference_id"] == str(owner.pk)
    assert params["subscription_data"]["metadata"] == {"user_id": str(owner.pk), "plan": "starter"}
    assert params["success_url"].endswith("/billing/?checkout=success")
    assert CreditAccount.objects.get(user=owner).stripe_customer_id.startswith("cus_")


def test_checkout_for_an_unknown_plan_is_a_clear_400(owner_client):
    assert owner_client.post("/billing/checkout/", {"plan": "free"}).status_code == 400
    assert owner_client.post("/billing/checkout/", {"plan": "gold"}).status_code == 400


def test_checkout_without_synced_prices_shows_an_error_not_a_500(owner_client, fake_stripe):
    response = owner_client.post("/billing/checkout/", {"plan": "pro"}, follow=True)
    assert response.status_code == 200
    assert "Payments are not available" in response.content.decode()


def test_portal_redirects_to_the_stripe_portal(owner_client, owner, fake_stripe):
    response = owner_client.post("/billing/portal/")
    assert response.status_code == 302
    assert response["Location"].startswith(fake_stripe.url + "/p/session/")
    (params,) = fake_stripe.calls("POST", "/v1/billing_portal/sessions")
    assert params["return_url"].endswith("/billing/")


def test_checkout_requires_post(owner_client):
    assert owner_client.get("/billing/checkout/").status_code == 405
