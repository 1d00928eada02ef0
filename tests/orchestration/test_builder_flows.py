"""The builder for the parallel flows: the flow picker, per-flow roles, the roundtable's rules, plan gating."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.gating import check
from orchestration.models import Agent, Criterion, Flow
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


def test_flow_picker_describes_each_flow_with_a_diagram_and_its_roles(owner_client, draft, starter):
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    for flow in ("sequential", "editorial", "roundtable"):
        assert f'data-testid="flow-{flow}"' in html
    assert "Writer → [Editor ‖ Editor ‖ …] → Synthesizer" in html
    assert "one “writer”, one or more “editor”s, one “synthesizer”" in html
    assert "[Critic ‖ Critic ‖ …] → Moderator" in html


def test_free_plan_sees_the_parallel_flows_locked_and_cannot_save_them(owner_client, draft, owner):
    assert not check(owner, "use_flow", flow=Flow.EDITORIAL).allowed
    assert not check(owner, "use_flow", flow=Flow.ROUNDTABLE).allowed
    assert check(owner, "use_flow", flow=Flow.SEQUENTIAL).allowed
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    assert html.count("Locked") >= 2
    response = owner_client.post(
        reverse("session_edit", args=[draft.pk]), settings_post_data(draft, flow="roundtable"), **HTMX
    )
    assert "does not include the roundtable flow" in response.content.decode()
    draft.refresh_from_db()
    assert draft.flow == Flow.SEQUENTIAL


def test_switching_to_a_parallel_flow_explains_which_roles_are_missing(owner_client, draft, starter):
    owner_client.post(reverse("session_edit", args=[draft.pk]), settings_post_data(draft, flow="editorial"), **HTMX)
    draft.refresh_from_db()
    assert draft.flow == Flow.EDITORIAL
    html = owner_client.get(reverse("session_flow_check", args=[draft.pk])).content.decode()
    assert 'data-testid="flow-problems"' in html
    assert "needs a synthesizer" in html
    # The draft's writer has role "writer", its editor "editor": only the synthesizer is missing.
    assert "needs a writer" not in html and "needs an editor" not in html
    synth = Agent.objects.create(
        session=draft, order=2, name="Synth", role="synthesizer", model=draft.agents.first().model, role_prompt="Merge."
    )
    Criterion.objects.create(agent=synth, name="Clarity", weight=1)
    html = owner_client.get(reverse("session_flow_check", args=[draft.pk])).content.decode()
    assert 'data-testid="flow-ok"' in html
    # Starting checks the same rules (services.validate_for_start).
    synth.role = "moderator"
    synth.save()
    from orchestration.services import validate_for_start

    assert any("“moderator” has no part in this flow" in p for p in validate_for_start(draft))


def test_roundtable_rules_are_saved_to_flow_config_and_validated(owner_client, draft, starter):
    url = reverse("session_edit", args=[draft.pk])
    data = settings_post_data(draft, flow="roundtable", stop_below_change_percent="12.5")  # checkbox left unticked
    owner_client.post(url, data, **HTMX)
    draft.refresh_from_db()
    assert draft.flow_config == {"stop_when_no_high_issues": False, "stop_below_change_percent": 12.5}
    data = settings_post_data(draft, flow="roundtable", stop_when_no_high_issues="on", stop_below_change_percent="")
    owner_client.post(url, data, **HTMX)
    draft.refresh_from_db()
    assert draft.flow_config == {"stop_when_no_high_issues": True, "stop_below_change_percent": None}
    response = owner_client.post(
        url, settings_post_data(draft, flow="roundtable", stop_below_change_percent="0"), **HTMX
    )
    assert "greater than or equal to 0.1" in response.content.decode()
    draft.refresh_from_db()
    assert draft.flow_config["stop_below_change_percent"] is None  # nothing lost, nothing half-saved
    html = owner_client.get(url).content.decode()
    assert (
        'name="stop_when_no_high_issues"' in html and "checked" in html.split('name="stop_when_no_high_issues"')[1][:80]
    )
