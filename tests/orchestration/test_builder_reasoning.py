"""The builder's reasoning controls: shown only for models that have them, checked against the API rules."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration.models import Reasoning, ReasoningOutput
from tests.studio_fixtures import *  # noqa: F403 - fixtures
from tests.studio_fixtures import agent_post_data, catalogue_model

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def thinking_llm(db):
    model = catalogue_model("anthropic", "studio-thinker", output="0.60", name="Studio Thinker")
    model.reasoning, model.reasoning_output, model.max_output_tokens = (
        Reasoning.THINKING_BUDGET,
        ReasoningOutput.SUMMARY,
        16_000,
    )
    model.save()
    return model


@pytest.fixture
def effort_llm(db):
    model = catalogue_model("openai", "studio-o-mini", output="0.60", name="Studio Reasoner")
    model.reasoning, model.reasoning_output = Reasoning.EFFORT, ReasoningOutput.HIDDEN
    model.save()
    return model


def _post(client, session, agent, **overrides):
    return client.post(
        reverse("agent_update", args=[session.pk, agent.pk]), agent_post_data(agent, **overrides), **HTMX
    )


def test_the_control_appears_only_for_a_model_that_has_it(owner_client, draft, thinking_llm, effort_llm):
    writer, editor = draft.agents.order_by("order")
    page = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    assert "Thinking budget" not in page and "Reasoning effort" not in page  # demo and a plain model

    # Choosing a thinking model re-renders the card with its control and the API's rules explained.
    response = _post(owner_client, draft, writer, model=str(thinking_llm.pk))
    card = response.content.decode()
    assert "Thinking budget (tokens)" in card
    assert "at least 1,024" in card and "refuses temperature" in card
    assert "Reasoning effort" not in card

    response = _post(owner_client, draft, editor, model=str(effort_llm.pk))
    card = response.content.decode()
    assert "Reasoning effort" in card and "Thinking budget" not in card
    assert "Studio Thinker · extended thinking" in card  # the model list says which models think


def test_a_thinking_budget_is_checked_against_the_apis_rules(owner_client, draft, thinking_llm):
    writer = draft.agents.get(name="Writer")
    writer.model = thinking_llm
    writer.save()

    too_small = _post(owner_client, draft, writer, thinking_budget_tokens="500").content.decode()
    assert "at least 1,024 tokens" in too_small
    too_big = _post(
        owner_client, draft, writer, thinking_budget_tokens="15000", max_output_tokens="2048"
    ).content.decode()
    assert "must fit Studio Thinker&#x27;s output limit of 16,000 tokens" in too_big
    writer.refresh_from_db()
    assert writer.thinking_budget_tokens == 0  # nothing invalid was saved

    ok = _post(owner_client, draft, writer, thinking_budget_tokens="4096", max_output_tokens="2048")
    assert ok.status_code == 200
    writer.refresh_from_db()
    assert writer.thinking_budget_tokens == 4096


def test_settings_for_a_control_the_model_lacks_are_dropped_not_saved(owner_client, draft, thinking_llm, effort_llm):
    editor = draft.agents.get(name="Editor")
    # A budget posted with a model without thinking (e.g. the control was for the previous model).
    _post(owner_client, draft, editor, thinking_budget_tokens="4096", reasoning_effort="high")
    editor.refresh_from_db()
    assert (editor.thinking_budget_tokens, editor.reasoning_effort) == (0, "")

    _post(owner_client, draft, editor, model=str(effort_llm.pk), reasoning_effort="high", thinking_budget_tokens="4096")
    editor.refresh_from_db()
    assert (editor.model, editor.thinking_budget_tokens, editor.reasoning_effort) == (effort_llm, 0, "high")

    bad = _post(owner_client, draft, editor, reasoning_effort="extreme").content.decode()
    assert "Select a valid choice" in bad


def test_presets_and_copies_keep_the_reasoning_settings(owner, draft, thinking_llm):
    from orchestration.presets import apply_preset, duplicate_session, save_team_as_preset

    writer = draft.agents.get(name="Writer")
    writer.model, writer.thinking_budget_tokens = thinking_llm, 2048
    writer.save()

    copy = duplicate_session(session=draft)
    assert copy.agents.get(name="Writer").thinking_budget_tokens == 2048

    preset = save_team_as_preset(session=draft, user=owner, name="Thinkers")
    writer.thinking_budget_tokens = 0
    writer.save()
    apply_preset(session=draft, preset=preset)
    assert draft.agents.get(name="Writer").thinking_budget_tokens == 2048
