"""Reasoning models: catalogue capability, per-agent settings, the turn's reasoning kept apart."""

from __future__ import annotations

import pytest

from orchestration.catalogue import seed_catalogue, seed_reasoning
from orchestration.models import LLMModel, Project, Reasoning, ReasoningOutput, Turn, WritingSession

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _catalogue():
    # Transactional tests elsewhere flush the tables the data migration filled; seed again.
    seed_catalogue()


def test_catalogue_marks_claude_thinking_and_gpt5_effort_and_nothing_else():
    claude = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    gpt5 = LLMModel.objects.get(provider="openai", model_id="gpt-5")
    gpt41 = LLMModel.objects.get(provider="openai", model_id="gpt-4.1")

    assert (claude.reasoning, claude.reasoning_output) == (Reasoning.THINKING_BUDGET, ReasoningOutput.SUMMARY)
    assert (gpt5.reasoning, gpt5.reasoning_output) == (Reasoning.EFFORT, ReasoningOutput.HIDDEN)
    assert gpt41.reasoning == Reasoning.NONE


def test_seed_reasoning_leaves_a_row_staff_configured_alone():
    gpt5 = LLMModel.objects.get(provider="openai", model_id="gpt-5")
    gpt5.reasoning = Reasoning.THINKING_BUDGET  # staff's choice, however odd
    gpt5.save()
    LLMModel.objects.filter(provider="openai", model_id="gpt-5-mini").update(reasoning="")

    changed = seed_reasoning()

    assert changed == 1
    assert LLMModel.objects.get(pk=gpt5.pk).reasoning == Reasoning.THINKING_BUDGET
    assert LLMModel.objects.get(provider="openai", model_id="gpt-5-mini").reasoning == Reasoning.EFFORT


def test_a_turn_keeps_its_reasoning_apart_from_its_output(owner):
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="T", brief="B")
    turn = Turn.objects.create(session=session, round=1, output_text="The essay.")

    Turn.objects.filter(pk=turn.pk).update(reasoning="First I will outline.", reasoning_tokens=12)
    turn.refresh_from_db()

    assert turn.output_text == "The essay."
    assert (turn.reasoning, turn.reasoning_tokens) == ("First I will outline.", 12)
