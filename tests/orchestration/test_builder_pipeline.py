"""The builder for the research -> plan -> build -> review pipeline: its settings, roles, estimate and preset."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration.models import Flow, TeamPreset
from tests.studio_fixtures import *  # noqa: F403 - fixtures
from tests.studio_fixtures import settings_post_data

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def starter(owner):
    from billing import services

    account = services.get_account(owner)
    account.plan = "starter"
    account.save()
    return owner


def pipeline_data(draft, **overrides):
    values = {
        "flow": "pipeline",
        "pipeline_format": "report",
        "pipeline_tone": "formal",
        "pipeline_length_words": "1200",
        "pipeline_passages": "5",
        "pipeline_revise_below": "7.5",
    }
    values.update(overrides)
    return settings_post_data(draft, **values)


def test_pipeline_settings_are_saved_validated_and_shown(owner_client, draft, starter):
    url = reverse("session_edit", args=[draft.pk])
    html = owner_client.get(url).content.decode()
    assert 'data-testid="flow-pipeline"' in html and "Research → Plan → Build → Review" in html
    assert "one “researcher”, one “planner”, one “builder”, one “reviewer”" in html
    owner_client.post(url, pipeline_data(draft), **HTMX)
    draft.refresh_from_db()
    assert draft.flow == Flow.PIPELINE
    assert draft.flow_config == {
        "passages": 5,
        "tone": "formal",
        "length_words": 1200,
        "format": "report",
        "revise_below": 7.5,
    }
    # Bad values are refused with the field's message; nothing half-saved.
    response = owner_client.post(url, pipeline_data(draft, pipeline_length_words="20", pipeline_tone="snarky"), **HTMX)
    body = response.content.decode()
    assert "greater than or equal to 100" in body and "snarky is not one of the available choices" in body
    draft.refresh_from_db()
    assert draft.flow_config["length_words"] == 1200 and draft.flow_config["tone"] == "formal"
    # An empty threshold turns the rebuild loop off.
    owner_client.post(url, pipeline_data(draft, pipeline_revise_below=""), **HTMX)
    draft.refresh_from_db()
    assert draft.flow_config["revise_below"] is None
    html = owner_client.get(url).content.decode()
    assert 'value="report" selected' in html.replace("\n", " ") or '<option value="report" selected>' in html


def test_the_pipeline_names_missing_roles_and_estimates_its_calls(owner_client, draft, starter):
    from billing.pricing import estimate_session_credits
    from orchestration.services import validate_for_start

    owner_client.post(reverse("session_edit", args=[draft.pk]), pipeline_data(draft), **HTMX)
    draft.refresh_from_db()
    problems = validate_for_start(draft)
    assert any("needs a researcher" in p for p in problems) and any("needs a planner" in p for p in problems)
    html = owner_client.get(reverse("session_flow_check", args=[draft.pk])).content.decode()
    assert "needs a researcher" in html
    # With the shipped preset's team: research and plan once, build and review per round.
    from orchestration.presets import apply_preset, seed_presets

    seed_presets()
    apply_preset(session=draft, preset=TeamPreset.objects.get(owner=None, slug="researched-article"))
    draft.refresh_from_db()
    assert validate_for_start(draft) == []
    low, high = estimate_session_credits(draft)
    draft.max_rounds = 3
    _, high3 = estimate_session_credits(draft)
    assert 0 < low <= high and high3 > high  # another round is another build and review
    # The estimate counts the passages a call reads, not whole references: a huge reference barely moves it.
    from orchestration import services

    services.add_references(session=draft, user=starter, items=[("Big", "Words and more words. " * 9000, "big.md")])
    _, high_big = estimate_session_credits(draft)
    assert high_big < high3 * 2


def test_free_plan_cannot_use_the_pipeline(owner_client, draft, owner):
    from billing.gating import check

    assert not check(owner, "use_flow", flow=Flow.PIPELINE).allowed
    response = owner_client.post(reverse("session_edit", args=[draft.pk]), pipeline_data(draft), **HTMX)
    assert "does not include" in response.content.decode()
    draft.refresh_from_db()
    assert draft.flow == Flow.SEQUENTIAL
