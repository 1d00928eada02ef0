"""Password reset and change, and managing email addresses."""

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.urls import reverse

from tests.conftest import make_user

pytestmark = pytest.mark.django_db

OLD = "correct horse battery staple"
NEW = "quiet-meadow-copper-77"


def _first_link(body: str, path_part: str) -> str:
    match = re.search(rf"https?://[^/\s]+(/accounts/{path_part}/[^\s]+)", body)
    assert match, body
    return match.group(1)


def test_password_reset_emails_a_link_that_sets_a_new_password(client):
    user = make_user("forgetful@example.com", password=OLD)

    response = client.post(reverse("account_reset_password"), {"email": "forgetful@example.com"})
    assert response.status_code == 302
    assert client.get(response["Location"]).content.decode().count("Check your email") >= 1
    assert len(mail.outbox) == 1
    link = _first_link(mail.outbox[0].body, "password/reset/key")

    # allauth moves the key into the session and redirects to a key-less URL.
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    assert "Choose a new password" in form_page.content.decode()
    action = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link

    done = client.post(action, {"password1": NEW, "password2": NEW}, follow=True)
    assert "Password changed" in done.content.decode()
    user.refresh_from_db()
    assert user.check_password(NEW)


def test_password_reset_refuses_a_weak_new_password(client):
    make_user("forgetful@example.com", password=OLD)
    client.post(reverse("account_reset_password"), {"email": "forgetful@example.com"})
    link = _first_link(mail.outbox[0].body, "password/reset/key")
    form_page = client.get(link, follow=True)
    action = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link

    response = client.post(action, {"password1": "123456789012", "password2": "123456789012"})

    assert response.status_code == 200
    assert "entirely numeric" in response.content.decode()


def test_password_reset_with_a_used_or_bad_key_says_so(client):
    make_user("forgetful@example.com", password=OLD)
    user_pk_b36 = "1"
    response = client.get(f"/accounts/password/reset/key/{user_pk_b36}-not-a-token/", follow=True)
    assert "This link no longer works" in response.content.decode()


def test_password_reset_for_unknown_email_does_not_reveal_anything(client):
    response = client.post(reverse("account_reset_password"), {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert response["Location"] == reverse("account_reset_password_done")


def test_change_password_needs_the_current_one(client):
    user = make_user("changer@example.com", password=OLD)
    client.force_login(user)
    url = reverse("account_change_password")

    wrong = client.post(url, {"oldpassword": "not-my-password", "password1": NEW, "password2": NEW})
    assert wrong.status_code == 200
    assert "errorlist" in wrong.content.decode()
    user.refresh_from_db()
    assert user.check_password(OLD)

    right = client.post(url, {"oldpassword": OLD, "password1": NEW, "password2": NEW})
    assert right.status_code == 302
    user.refresh_from_db()
    assert user.check_password(NEW)


def test_change_email_add_confirm_make_primary_and_remove(client):
    user = make_user("old@example.com")
    client.force_login(user)
    url = reverse("account_email")

    page = client.get(url)
    assert "old@example.com" in page.content.decode()

    added = client.post(url, {"action_add": "", "email": "new@example.com"})
    assert added.status_code == 302
    address = EmailAddress.objects.get(user=user, email="new@example.com")
    assert not address.verified
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new@example.com"]

    # An unverified address cannot become primary.
    client.post(url, {"action_primary": "", "email": "new@example.com"})
    assert not EmailAddress.objects.get(pk=address.pk).primary

    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^\s]+/)", mail.outbox[0].body).group(1)
    client.post(link)
    assert EmailAddress.objects.get(pk=address.pk).verified

    client.post(url, {"action_primary": "", "email": "new@example.com"})
    assert EmailAddress.objects.get(pk=address.pk).primary
    user.refresh_from_db()
    assert user.email == "new@example.com"

    client.post(url, {"action_remove": "", "email": "old@example.com"})
    assert list(EmailAddress.objects.filter(user=user).values_list("email", flat=True)) == ["new@example.com"]


def test_adding_a_bad_email_shows_a_field_error(client):
    client.force_login(make_user("old@example.com"))
    response = client.post(reverse("account_email"), {"action_add": "", "email": "nope"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Enter a valid email address." in html
    assert 'aria-invalid="true"' in html


def test_primary_email_cannot_be_removed(client):
    user = make_user("only@example.com")
    client.force_login(user)
    client.post(reverse("account_email"), {"action_remove": "", "email": "only@example.com"})
    assert EmailAddress.objects.filter(user=user, email="only@example.com").exists()
