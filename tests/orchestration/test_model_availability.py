"""Models whose provider is not connected on this server: users see why, in their words; staff see the setting."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from orchestration.services import validate_for_start
from tests.conftest import make_user
from tests.studio_fixtures import *  # noqa: F403 - fixtures

ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9]*_(?:API_KEY|BASE_URL)\b")


@pytest.fixture
def openai_not_connected(settings):
    settings.PROVIDERS = {**settings.PROVIDERS, "openai": {"api_key": "", "base_url": ""}}


def test_the_builder_marks_models_of_unconnected_providers_unavailable_without_naming_settings(
    owner_client, draft, cheap_llm, openai_not_connected
):
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    options = re.findall(rf'<option value="{cheap_llm.pk}"[^>]*>([^<]*)</option>', html)
    assert options, "the model is still listed"
    assert any("unavailable: OpenAI is not connected on this server" in text for text in options)
    # The editor already uses it (so it stays selected there); everywhere else it cannot be picked.
    assert re.search(rf'<option value="{cheap_llm.pk}" disabled>', html)
    assert not ENV_NAME.search(html)


def test_start_refuses_in_user_words(draft, openai_not_connected):
    problems = validate_for_start(draft)
    assert "Editor: OpenAI is not connected on this server, so its models cannot run. Choose another model." in problems
    assert not any(ENV_NAME.search(p) for p in problems)


def test_a_connected_provider_is_offered_normally(owner_client, draft, cheap_llm, settings):
    settings.PROVIDERS = {**settings.PROVIDERS, "openai": {"api_key": "sk-test", "base_url": ""}}
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    # Only this model's options: other providers' models depend on which keys the machine has.
    options = re.findall(rf'<option value="{cheap_llm.pk}"[^>]*>([^<]*)</option>', html)
    assert options, "the model is listed"
    assert not any("unavailable" in text for text in options)
    assert not re.search(rf'<option value="{cheap_llm.pk}" disabled>', html)
    assert not [p for p in validate_for_start(draft) if "not connected" in p]


def test_staff_see_the_configuration_state_in_the_admin(client, cheap_llm, demo_llm, openai_not_connected):
    staff = make_user("ops@example.com", is_staff=True, is_superuser=True)
    client.force_login(staff)
    html = client.get(reverse("admin:orchestration_llmmodel_changelist")).content.decode()
    assert "Provider on this server" in html
    assert "OpenAI is not configured. Set OPENAI_API_KEY." in html  # operator detail, for staff only
    assert "The demo provider works offline" in html
