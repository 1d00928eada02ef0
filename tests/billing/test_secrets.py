"""Stripe secrets in the admin and on the debug page (issue 9, case 10)."""

from __future__ import annotations

import sys

import pytest
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse

from tests.conftest import make_user

SECRET = "sk_test_51QsecretAtelierKeyDoNotShow0123456789"
WEBHOOK_SECRET = "whsec_AtelierWebhookSecretDoNotShow42"


@pytest.fixture
def stripe_key(settings):
    settings.STRIPE_TEST_SECRET_KEY = SECRET
    settings.STRIPE_LIVE_MODE = False
    return SECRET


@pytest.fixture
def stripe_rows(db, stripe_key):
    from djstripe.models import Customer, Price, Product, WebhookEndpoint

    # dj-stripe 2.11 keeps Stripe's object in stripe_data; the columns are derived from it.
    product = Product.objects.create(
        id="prod_atelier_pro", livemode=False, stripe_data={"id": "prod_atelier_pro", "name": "Atelier Pro"}
    )
    price = Price.objects.create(
        id="price_pro", livemode=False, active=True, product=product, stripe_data={"id": "price_pro"}
    )
    customer = Customer.objects.create(id="cus_secret_test", livemode=False, stripe_data={"id": "cus_secret_test"})
    endpoint = WebhookEndpoint.objects.create(
        id="we_secret",
        url="https://example.com/stripe/webhook/",
        secret=WEBHOOK_SECRET,
        livemode=False,
        api_version="2026-05-27.dahlia",
        enabled_events=["*"],
        status="enabled",
    )
    return {"product": product, "price": price, "customer": customer, "endpoint": endpoint}


def _staff(email: str, *, superuser: bool = False):
    user = make_user(email, is_staff=True, is_superuser=superuser)
    if not superuser:  # every dj-stripe permission: the admin is what decides what they see
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="djstripe"))
    return user


def _change_pages(rows) -> list[str]:
    return [
        reverse(f"admin:djstripe_{obj._meta.model_name}_change", args=[obj.pk])
        for key, obj in rows.items()
        if key != "endpoint"
    ]


def test_staff_who_are_not_superusers_see_no_stripe_secret_on_any_djstripe_page(client, stripe_rows):
    client.force_login(_staff("staff@example.com"))
    for url in _change_pages(stripe_rows):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert SECRET not in html, url
        assert "sk_test_" not in html and "API key" not in html, url
    # Where secrets are managed: superusers only.
    endpoint = stripe_rows["endpoint"]
    assert client.get(reverse("admin:djstripe_webhookendpoint_change", args=[endpoint.pk])).status_code in (302, 403)
    assert client.get(reverse("admin:djstripe_apikey_changelist")).status_code == 403
    assert WEBHOOK_SECRET not in client.get(reverse("admin:index")).content.decode()


def test_superusers_see_the_key_masked(client, stripe_rows):
    client.force_login(_staff("root@example.com", superuser=True))
    for url in _change_pages(stripe_rows):
        html = client.get(url).content.decode()
        assert SECRET not in html, url
        assert "sk_test_...6789" in html, url
    html = client.get(reverse("admin:djstripe_webhookendpoint_change", args=[stripe_rows["endpoint"].pk])).content
    assert WEBHOOK_SECRET.encode() not in html


def _debug_page(exc_info) -> str:
    from django.views.debug import technical_500_response

    request = RequestFactory().get("/billing/")
    return technical_500_response(request, *exc_info).content.decode()


def test_the_debug_page_hides_the_stripe_key_in_a_failing_stripe_call(settings, stripe_key, db):
    import stripe

    from billing import stripe_api
    from billing.plans import PLANS

    settings.DEBUG = True
    previous = stripe.api_base
    stripe.api_base = "http://127.0.0.1:9"  # nothing listens: the SDK raises with the key in its frames
    try:
        stripe_api.price_id_for(PLANS["pro"])
    except stripe.StripeError:
        html = _debug_page(sys.exc_info())
    finally:
        stripe.api_base = previous
    assert "APIConnectionError" in html
    assert SECRET not in html
    assert "api_key" in html and "********************" in html


def test_the_debug_page_hides_webhook_secrets_and_database_passwords(settings, stripe_rows):
    settings.DEBUG = True
    password = "-".join(["hunter2", "db", "password"])  # built, so the page's source excerpt cannot show it
    settings.ATELIER_DATABASE_HINT = f"postgres://atelier:{password}@db.internal:5432/atelier"
    endpoint = stripe_rows["endpoint"]

    def verify(payload: str) -> None:
        secret_in_hand = endpoint.secret  # noqa: F841 - a frame variable, as in dj-stripe's validation
        signing = {"whsec": WEBHOOK_SECRET}  # noqa: F841
        raise ValueError("signature mismatch")

    try:
        verify("{}")
    except ValueError:
        html = _debug_page(sys.exc_info())
    assert "signature mismatch" in html
    assert WEBHOOK_SECRET not in html
    assert password not in html and "ATELIER_DATABASE_HINT" in html
