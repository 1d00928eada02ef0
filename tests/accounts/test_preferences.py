"""The profile and preferences page, and the time zone it applies to every page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Profile
from accounts.services import get_profile
from orchestration.models import LLMModel

pytestmark = pytest.mark.django_db

URL = "/accounts/preferences/"


def _model(model_id: str, *, enabled: bool = True) -> LLMModel:
    return LLMModel.objects.create(
        provider="anthropic",
        model_id=model_id,
        display_name=model_id.title(),
        context_window=200_000,
        input_price_per_mtok=Decimal("3"),
        output_price_per_mtok=Decimal("15"),
        enabled=enabled,
    )


def _data(**overrides) -> dict:
    data = {"display_name": "Ada", "time_zone": "Europe/Paris", "default_model": "", "email_on_run_finished": "on"}
    data.update(overrides)
    return data


def test_preferences_url_is_named():
    assert reverse("preferences") == URL


def test_preferences_page_requires_login(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_get_profile_creates_one_with_defaults_once(owner):
    first = get_profile(owner)
    second = get_profile(owner)
    assert first.pk == second.pk
    assert first.time_zone == "UTC"
    assert Profile.objects.filter(user=owner).count() == 1


def test_preferences_page_shows_the_form_and_account_links(owner_client):
    html = owner_client.get(URL).content.decode()
    assert 'name="display_name"' in html
    assert '<option value="Europe/Paris">' in html
    assert reverse("account_email") in html
    assert reverse("account_change_password") in html


def test_saving_preferences_stores_them_and_says_so(owner_client, owner):
    model = _model("claude-test")

    response = owner_client.post(URL, _data(default_model=str(model.pk), display_name="  Ada   Lovelace "), follow=True)

    assert response.status_code == 200
    assert "Your preferences were saved." in response.content.decode()
    profile = Profile.objects.get(user=owner)
    assert profile.display_name == "Ada Lovelace"
    assert profile.time_zone == "Europe/Paris"
    assert profile.default_model == model
    assert profile.email_on_run_finished is True


def test_unchecking_the_email_box_turns_notifications_off(owner_client, owner):
    data = _data()
    del data["email_on_run_finished"]
    owner_client.post(URL, data)
    assert Profile.objects.get(user=owner).email_on_run_finished is False


def test_bogus_time_zone_is_refused_with_a_clear_error(owner_client, owner):
    response = owner_client.post(URL, _data(time_zone="Mars/Olympus_Mons"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Select a valid choice" in html
    assert 'aria-invalid="true"' in html
    assert get_profile(owner).time_zone == "UTC"


def test_disabled_models_are_not_offered_or_accepted(owner_client, owner):
    enabled = _model("enabled-model")
    disabled = _model("disabled-model", enabled=False)

    html = owner_client.get(URL).content.decode()
    assert f'value="{enabled.pk}"' in html
    assert f'value="{disabled.pk}"' not in html

    response = owner_client.post(URL, _data(default_model=str(disabled.pk)))
    assert "Select a valid choice" in response.content.decode()
    assert get_profile(owner).default_model is None


def _zone_seen_by_a_view(client, user) -> str:
    """Run the middleware with the client's session and report the zone a view would render in."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import RequestFactory

    from accounts.middleware import UserTimezoneMiddleware

    seen: list[str] = []
    request = RequestFactory().get("/")
    request.user = user
    request.session = SessionStore(session_key=client.session.session_key)

    def view(_request):
        seen.append(timezone.get_current_timezone_name())
        from django.http import HttpResponse

        return HttpResponse()

    UserTimezoneMiddleware(view)(request)
    request.session.save()
    return seen[0]


def test_saved_time_zone_applies_to_the_next_pages(owner_client, owner):
    owner_client.post(URL, _data(time_zone="Asia/Tokyo"))
    assert _zone_seen_by_a_view(owner_client, owner) == "Asia/Tokyo"


def test_time_zone_is_read_from_the_profile_when_the_session_has_none(client, owner):
    Profile.objects.create(user=owner, time_zone="America/New_York")
    client.force_login(owner)
    assert _zone_seen_by_a_view(client, owner) == "America/New_York"
    # Cached for the session: later pages need no query for it.
    assert client.session["atelier_tz"] == [owner.pk, "America/New_York"]


def test_time_zone_does_not_leak_past_the_request(client, owner):
    Profile.objects.create(user=owner, time_zone="Asia/Tokyo")
    client.force_login(owner)
    _zone_seen_by_a_view(client, owner)
    assert timezone.get_current_timezone_name() == "UTC"
