"""Settings → API keys, and the admin: what a user and staff see and can do."""

from __future__ import annotations

import pytest
from django.urls import reverse

from api.models import ApiKey
from tests.api.conftest import ApiClient
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_a_new_key_is_shown_once_then_only_its_prefix(owner_client, owner):
    response = owner_client.post(reverse("api_keys"), {"name": "Nightly export"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    key = ApiKey.objects.get(owner=owner)
    raw = html.split('data-testid="new-key-value">')[1].split("<")[0]
    assert raw.startswith(key.prefix + "_") and "shown only this once" in html
    assert ApiClient(raw).get("me").status_code == 200  # the key on the page works
    listing = owner_client.get(reverse("api_keys")).content.decode()
    assert "Nightly export" in listing and f"{key.prefix}…" in listing and raw not in listing


def test_a_key_needs_a_name(owner_client, owner):
    response = owner_client.post(reverse("api_keys"), {"name": "   "})
    assert response.status_code == 400 and "Give the key a name" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_revoking_from_the_page_makes_the_key_401(owner_client, owner, owner_key):
    key = ApiKey.objects.get(owner=owner)
    response = owner_client.post(reverse("api_key_revoke", args=[key.pk]), follow=True)
    assert "Revoked" in response.content.decode()
    assert ApiClient(owner_key).get("me").status_code == 401
    assert "Revoked" in owner_client.get(reverse("api_keys")).content.decode()


def test_an_outsider_can_neither_see_nor_revoke_anothers_key(client, outsider, owner, owner_key):
    key = ApiKey.objects.get(owner=owner)
    client.force_login(outsider)
    assert key.prefix not in client.get(reverse("api_keys")).content.decode()
    assert client.post(reverse("api_key_revoke", args=[key.pk])).status_code == 404
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_staff_see_keys_without_secrets_and_revoke_them_in_the_admin(client, owner, owner_key):
    staff = make_user("staff@example.com", is_staff=True, is_superuser=True)
    client.force_login(staff)
    key = ApiKey.objects.get(owner=owner)
    listing = client.get(reverse("admin:api_apikey_changelist")).content.decode()
    assert key.prefix in listing and key.secret_hash not in listing
    detail = client.get(reverse("admin:api_apikey_change", args=[key.pk])).content.decode()
    assert key.secret_hash not in detail
    client.post(reverse("admin:api_apikey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}, follow=True)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert ApiClient(owner_key).get("me").status_code == 401


def test_the_preferences_page_links_to_the_keys(owner_client):
    assert reverse("api_keys") in owner_client.get(reverse("preferences")).content.decode()
