"""Fixtures for the studio tests: a small model catalogue and an owner's draft session."""

from __future__ import annotations

from decimal import Decimal

import pytest


def catalogue_model(provider: str, model_id: str, *, output: str | None, enabled: bool = True, name: str = ""):
    from orchestration.models import LLMModel

    model, _ = LLMModel.objects.update_or_create(
        provider=provider,
        model_id=model_id,
        defaults={
            "display_name": name or model_id,
            "context_window": 200_000,
            "input_price_per_mtok": None if output is None else Decimal(output) / 5,
            "output_price_per_mtok": None if output is None else Decimal(output),
            "credit_multiplier": Decimal("1.50"),
            "enabled": enabled,
        },
    )
    return model


@pytest.fixture
def demo_llm(db):
    # Priced at zero, like the shipped catalogue's demo model.
    return catalogue_model("demo", "demo-writer", output="0", name="Demo writer")


@pytest.fixture
def cheap_llm(db):
    return catalogue_model("openai", "studio-mini", output="0.60", name="Studio Mini")


@pytest.fixture
def premium_llm(db):
    # Output price above the Standard tier: not on the Free plan.
    return catalogue_model("anthropic", "studio-opus", output="75", name="Studio Opus")


@pytest.fixture
def disabled_llm(db):
    return catalogue_model("openai", "studio-retired", output="0.60", enabled=False, name="Studio Retired")


@pytest.fixture
def shipped_presets(db, demo_llm):
    from orchestration.presets import seed_presets

    seed_presets()
    from orchestration.models import TeamPreset

    return TeamPreset.objects.filter(owner=None)


@pytest.fixture
def project(owner):
    from orchestration.models import Project

    return Project.objects.create(owner=owner, name="Essays")


@pytest.fixture
def draft(project, demo_llm, cheap_llm):
    """A draft with two agents: a writer on the demo model and an editor on a cheap model."""
    from orchestration.models import Agent, Criterion, WritingSession

    session = WritingSession.objects.create(project=project, title="On bike lanes", brief="Argue for bike lanes.")
    writer = Agent.objects.create(session=session, order=0, name="Writer", model=demo_llm, role_prompt="Write.")
    editor = Agent.objects.create(
        session=session, order=1, name="Editor", role="editor", model=cheap_llm, role_prompt="Edit."
    )
    Criterion.objects.create(agent=writer, name="Clarity", weight=1.0)
    Criterion.objects.create(agent=editor, name="Evidence", weight=2.0)
    return session


def agent_post_data(agent, **overrides) -> dict[str, str]:
    """What the agent card form posts, as the browser would send it."""
    prefix = f"agent-{agent.pk}"
    criteria = list(agent.criteria.all())
    data = {
        f"{prefix}-name": agent.name,
        f"{prefix}-role": agent.role,
        f"{prefix}-model": str(agent.model_id),
        f"{prefix}-fallback_model": str(agent.fallback_model_id or ""),
        f"{prefix}-role_prompt": agent.role_prompt,
        f"{prefix}-temperature": str(agent.temperature),
        f"{prefix}-max_output_tokens": str(agent.max_output_tokens),
        f"{prefix}-criteria-TOTAL_FORMS": str(len(criteria)),
        f"{prefix}-criteria-INITIAL_FORMS": str(len(criteria)),
        f"{prefix}-criteria-MIN_NUM_FORMS": "0",
        f"{prefix}-criteria-MAX_NUM_FORMS": "1000",
    }
    for i, criterion in enumerate(criteria):
        data.update(
            {
                f"{prefix}-criteria-{i}-id": str(criterion.pk),
                f"{prefix}-criteria-{i}-agent": str(agent.pk),
                f"{prefix}-criteria-{i}-name": criterion.name,
                f"{prefix}-criteria-{i}-weight": str(criterion.weight),
                f"{prefix}-criteria-{i}-description": criterion.description,
            }
        )
    data.update({k if k.startswith(prefix) or k == "action" else f"{prefix}-{k}": v for k, v in overrides.items()})
    return data


def settings_post_data(session, **overrides) -> dict[str, str]:
    data = {
        "title": session.title,
        "flow": session.flow,
        "brief": session.brief,
        "document": session.document,
        "max_rounds": str(session.max_rounds),
        "score_threshold": "" if session.score_threshold is None else str(session.score_threshold),
        "threshold_agent": str(session.threshold_agent_id or ""),
        "convergence_percent": "" if session.convergence_percent is None else str(session.convergence_percent),
        "credit_budget": "" if session.credit_budget is None else str(session.credit_budget),
    }
    data.update(overrides)
    return data
