"""Every account page is rendered inside the app's layout, not allauth's bare defaults."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

ANONYMOUS = [
    "account_login",
    "account_signup",
    "account_reset_password",
    "account_reset_password_done",
    "account_email_verification_sent",
]
SIGNED_IN = ["account_email", "account_change_password", "account_logout", "preferences", "account_reauthenticate"]


def _assert_app_layout(html: str) -> None:
    assert 'class="topbar"' in html
    assert "css/app.css" in html
    assert re.search(r'class="card (auth-card|settings-main)"', html)
    # CSP forbids inline styles and scripts; the pages must not need them.
    assert " style=" not in html
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)


@pytest.mark.parametrize("name", ANONYMOUS)
def test_anonymous_account_pages_use_the_app_layout(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 200
    _assert_app_layout(response.content.decode())


@pytest.mark.parametrize("name", SIGNED_IN)
def test_signed_in_account_pages_use_the_app_layout(owner_client, name):
    response = owner_client.get(reverse(name))
    assert response.status_code == 200
    _assert_app_layout(response.content.decode())


def test_settings_pages_link_to_each_other(owner_client):
    html = owner_client.get(reverse("account_email")).content.decode()
    for name in ("preferences", "account_email", "account_change_password"):
        assert f'href="{reverse(name)}"' in html


def test_landing_page_invites_visitors_to_sign_up(client):
    html = client.get("/").content.decode()
    assert reverse("account_signup") in html
    assert " style=" not in html


def test_landing_page_sends_signed_in_users_to_their_dashboard(owner_client):
    response = owner_client.get("/")
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
