"""Builders for engine tests: a project, a two-agent session and scripted provider replies."""

from __future__ import annotations

import json
from decimal import Decimal

from orchestration.models import Agent, Criterion, LLMModel, Project, WritingSession


def on_pro_plan(user):
    """Put `user` on the Pro plan; returns the user."""
    from billing.plans import PRO
    from billing.services import get_account

    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    return user


def priced_model(provider: str, model_id: str, **extra) -> LLMModel:
    defaults = {
        "display_name": model_id,
        "context_window": 200_000,
        "input_price_per_mtok": Decimal("3"),
        "cached_input_price_per_mtok": Decimal("0.3"),
        "output_price_per_mtok": Decimal("15"),
        "credit_multiplier": Decimal("1"),
        "enabled": True,
    }
    defaults.update(extra)
    model, _ = LLMModel.objects.update_or_create(provider=provider, model_id=model_id, defaults=defaults)
    return model


def two_agent_session(owner, *, max_rounds: int = 3, **session_fields) -> WritingSession:
    """One Anthropic writer and one OpenAI-compatible editor, both with a two-criterion rubric."""
    writer_model = priced_model("anthropic", "claude-test")
    editor_model = priced_model("compatible", "local-llama", input_price_per_mtok=Decimal("0.5"))
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(
        project=project,
        title="Why cities need trees",
        brief="An essay on why cities need trees.",
        max_rounds=max_rounds,
        **session_fields,
    )
    for order, (name, role, model) in enumerate(
        [("Writer", "writer", writer_model), ("Editor", "editor", editor_model)]
    ):
        agent = Agent.objects.create(
            session=session,
            order=order,
            name=name,
            role=role,
            model=model,
            role_prompt=f"You are the {role}.",
            max_output_tokens=1024,
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=2)
        Criterion.objects.create(agent=agent, name="Evidence", weight=1)
    return session


def scored_reply(document: str, clarity: float, evidence: float, feedback: str = "Tighten the intro.") -> str:
    evaluation = json.dumps({"scores": {"Clarity": clarity, "Evidence": evidence}, "feedback": feedback})
    return f"{document}\n\n<evaluation>\n{evaluation}\n</evaluation>"


def counting_replies(start: float = 5.0, step: float = 1.0):
    """A reply function: a document that grows each call, scores that rise each call."""
    state = {"n": 0}

    def reply(request) -> str:
        state["n"] += 1
        n = state["n"]
        score = min(10.0, start + step * (n - 1))
        body = "\n\n".join(f"Paragraph {i} about urban trees and shade, revision {n}." for i in range(1, n + 2))
        return scored_reply(f"# Why cities need trees\n\n{body}", score, score)

    return reply
