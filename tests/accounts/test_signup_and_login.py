"""Sign up, confirm the email through the link that was sent, log in, and the errors along the way."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from tests.conftest import make_user

pytestmark = pytest.mark.django_db

STRONG = "violet-harbour-lantern-42"


def _signup(client, email: str = "new@example.com", password: str = STRONG, password2: str | None = None):
    return client.post(
        reverse("account_signup"),
        {"email": email, "password1": password, "password2": password2 if password2 is not None else password},
    )


def _confirmation_link(message) -> str:
    match = re.search(r"https?://[^\s]+/accounts/confirm-email/[^\s]+/", message.body)
    assert match, message.body
    return match.group(0)


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_signup_creates_an_unverified_user_and_emails_a_confirmation_link(client):
    response = _signup(client)

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    user = get_user_model().objects.get(email="new@example.com")
    assert not EmailAddress.objects.get(user=user).verified
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]
    assert mail.outbox[0].subject.startswith("[Atelier] ")
    assert "Hello from Atelier!" in mail.outbox[0].body
    assert "/accounts/confirm-email/" in _confirmation_link(mail.outbox[0])


def test_verification_sent_page_uses_the_app_layout(client):
    response = client.get(_signup(client)["Location"])
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="topbar"' in html
    assert "Check your email" in html


def test_unverified_user_cannot_log_in(client):
    _signup(client)
    client.logout()

    response = client.post(reverse("account_login"), {"login": "new@example.com", "password": STRONG})

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session


def test_confirming_through_the_link_verifies_and_logs_in(client):
    _signup(client)
    link = _path(_confirmation_link(mail.outbox[0]))

    page = client.get(link)
    assert page.status_code == 200
    assert "Confirm my email" in page.content.decode()

    response = client.post(link)

    assert response.status_code == 302
    assert EmailAddress.objects.get(email="new@example.com").verified
    user = get_user_model().objects.get(email="new@example.com")
    assert client.session["_auth_user_id"] == str(user.pk)


def test_login_works_after_verification(client):
    _signup(client)
    client.post(_path(_confirmation_link(mail.outbox[0])))
    client.logout()

    response = client.post(reverse("account_login"), {"login": "new@example.com", "password": STRONG})

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert "_auth_user_id" in client.session


def test_an_expired_or_bogus_link_says_so(client):
    response = client.get("/accounts/confirm-email/not-a-real-key/")
    assert response.status_code == 200
    assert "expired or is invalid" in response.content.decode()


def test_wrong_password_shows_a_clear_error(client):
    make_user("someone@example.com", password=STRONG)

    response = client.post(reverse("account_login"), {"login": "someone@example.com", "password": "nope-nope-nope"})

    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="errorlist nonfield"' in html
    assert "not correct" in html
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short1!", "too short"),
        ("password123", "too common"),
        ("4815162342108", "entirely numeric"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(client, password, message):
    response = _signup(client, password=password)

    html = response.content.decode()
    assert response.status_code == 200
    assert message in html
    assert 'aria-invalid="true"' in html
    assert not get_user_model().objects.filter(email="new@example.com").exists()
    assert mail.outbox == []


def test_mismatched_passwords_are_refused(client):
    response = _signup(client, password2="something-else-entirely-9")
    assert "same password" in response.content.decode()
    assert not get_user_model().objects.exists()


def test_bad_email_is_refused_on_the_field(client):
    response = _signup(client, email="not-an-email")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Enter a valid email address." in html
    assert re.search(r'<input[^>]*name="email"[^>]*aria-invalid="true"', html) or re.search(
        r'<input[^>]*aria-invalid="true"[^>]*name="email"', html
    )
    assert not get_user_model().objects.exists()


def test_signup_with_a_taken_email_does_not_reveal_it_but_tells_the_owner(client):
    make_user("taken@example.com")

    response = _signup(client, email="taken@example.com")

    # Same answer as a fresh signup (no account enumeration); the real owner gets a heads-up email.
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert get_user_model().objects.filter(email="taken@example.com").count() == 1
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["taken@example.com"]
    assert "/accounts/confirm-email/" not in mail.outbox[0].body


def test_logout_asks_for_confirmation_then_logs_out(client):
    client.force_login(make_user("leaving@example.com"))

    page = client.get(reverse("account_logout"))
    assert page.status_code == 200
    assert "Are you sure" in page.content.decode()
    assert "_auth_user_id" in client.session

    response = client.post(reverse("account_logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
