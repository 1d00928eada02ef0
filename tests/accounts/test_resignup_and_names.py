"""Signing up again with an unconfirmed address really sends a link; people are named by their email's local part."""

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


@pytest.fixture
def no_rate_limits(settings):
    # allauth allows one confirmation mail per address per 10 s; the test re-signs up at once.
    settings.ACCOUNT_RATE_LIMITS = False


def _signup(client, email: str):
    return client.post(reverse("account_signup"), {"email": email, "password1": STRONG, "password2": STRONG})


def test_signing_up_again_with_an_unconfirmed_address_sends_a_working_confirmation_link(client, no_rate_limits):
    _signup(client, "again@example.com")
    mail.outbox.clear()

    response = _signup(client, "Again@example.com")

    assert response.status_code == 302 and response["Location"] == reverse("account_email_verification_sent")
    assert get_user_model().objects.filter(email__iexact="again@example.com").count() == 1  # no second account
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["again@example.com"]  # the account's address
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/[^\s]+/)", mail.outbox[0].body)
    assert link, mail.outbox[0].body
    client.post(link.group(1))
    assert EmailAddress.objects.get(email="again@example.com").verified


def test_signing_up_with_a_confirmed_address_still_only_says_the_account_exists(client, no_rate_limits):
    user = make_user("taken@example.com")
    EmailAddress.objects.update_or_create(
        user=user, email="taken@example.com", defaults={"verified": True, "primary": True}
    )

    _signup(client, "taken@example.com")

    assert len(mail.outbox) == 1
    assert "/accounts/confirm-email/" not in mail.outbox[0].body
    assert "password" in mail.outbox[0].body.lower()  # allauth's "you already have an account" mail


def test_a_human_turn_is_labelled_with_the_email_local_part_until_a_display_name_is_set(owner_client, owner):
    from accounts.services import display_name, get_profile
    from orchestration import services
    from orchestration.models import Project, Status, Turn, WritingSession

    owner.username = "user-7f3a9c"  # what allauth generates when people sign up with an email
    owner.email = "ada.lovelace@example.com"
    owner.save()
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=owner, name="P"), title="T", brief="b", status=Status.PAUSED
    )
    services.apply_human_edit(session=session, user=owner, document="# Mine\n", note="Shorter, please.")
    turn = Turn.objects.get(session=session, kind=Turn.Kind.HUMAN)
    assert turn.agent_name == "ada.lovelace"
    assert "user-7f3a9c" not in owner_client.get(reverse("session_detail", args=[session.pk])).content.decode()

    profile = get_profile(owner)
    profile.display_name = "Ada"
    profile.save()
    assert display_name(owner) == "Ada" and str(profile) == "Ada"
