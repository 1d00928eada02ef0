"""Teams for the parallel flows and scripted replies that answer by recipe (for the fake LLM server)."""

from __future__ import annotations

import json
import re
from decimal import Decimal

from orchestration.models import Agent, Criterion, Flow, Project, WritingSession
from tests.orchestration.engine_helpers import priced_model


def team_session(owner, flow: str, roles: list[tuple[str, str]], *, max_rounds: int = 2, models=None, **fields):
    """A session of `flow` with agents [(name, role)], each on the Anthropic test model unless `models` says."""
    default = priced_model("anthropic", "claude-test")
    project = Project.objects.create(owner=owner, name="Flows")
    session = WritingSession.objects.create(
        project=project,
        title="Trees",
        brief="An essay on why cities need trees.",
        flow=flow,
        max_rounds=max_rounds,
        **fields,
    )
    for order, (name, role) in enumerate(roles):
        model = (models or {}).get(name, default)
        agent = Agent.objects.create(
            session=session,
            order=order,
            name=name,
            role=role,
            model=model,
            role_prompt=f"You are the {role}.",
            max_output_tokens=1024,
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def editorial_session(owner, **fields):
    return team_session(
        owner,
        Flow.EDITORIAL,
        [
            ("Writer", "writer"),
            ("Structure", "editor"),
            ("Line", "editor"),
            ("Style", "editor"),
            ("Synth", "synthesizer"),
        ],
        **fields,
    )


def roundtable_session(owner, **fields):
    fields.setdefault("document", "# Trees\n\nCities need trees because shade cools streets.\n")
    return team_session(
        owner,
        Flow.ROUNDTABLE,
        [("Product", "critic"), ("Engineering", "critic"), ("Risk", "critic"), ("Moderator", "moderator")],
        **fields,
    )


def agent_named(request) -> str:
    match = re.search(r"You are (.+?), the ", request.system_text)
    return match.group(1) if match else "?"


def recipe_of(request) -> str:
    system = request.system_text
    if "reviewers working IN PARALLEL" in system:
        return "critique"
    if "You are the synthesizer of an editorial team" in system:
        return "synthesize"
    if "You are the moderator of a roundtable" in system:
        return "moderate"
    return "revise"


def flow_replies(*, high_issues_by_round=None, document_by_round=None):
    """A reply function for every recipe. `high_issues_by_round(round) -> int` says how many high-severity
    issues each critic raises; `document_by_round(round, recipe) -> str` what documents say."""

    def round_of(request) -> int:
        match = re.search(r"This is round (\d+) of", request.user_text)
        return int(match.group(1)) if match else 1

    def document(request, recipe) -> str:
        r = round_of(request)
        if document_by_round:
            return document_by_round(r, recipe)
        body = "\n\n".join(f"Paragraph {i} on shade and rain, version {r}-{recipe}." for i in range(1, 4))
        return f"# Trees\n\n{body}"

    def reply(request) -> str:
        recipe = recipe_of(request)
        r = round_of(request)
        evaluation = (
            "<evaluation>\n"
            + json.dumps({"scores": {"Clarity": 6 + r}, "feedback": "More shade data."})
            + "\n</evaluation>"
        )
        if recipe == "critique":
            highs = high_issues_by_round(r) if high_issues_by_round else 1
            issues = [
                {"severity": "high", "passage": "shade", "problem": f"High {n}", "fix": "Fix it"} for n in range(highs)
            ]
            issues.append({"severity": "low", "passage": "rain", "problem": "Wordy", "fix": "Trim"})
            block = f"<issues>\n{json.dumps(issues)}\n</issues>"
            return f"{agent_named(request)} thinks it needs work.\n\n{block}\n\n{evaluation}"
        ids = list(dict.fromkeys(re.findall(r"\[((?:E|I)\d+)\]", request.user_text)))
        if recipe == "synthesize":
            items = [{"id": i, "decision": "accepted", "reason": "Clearer."} for i in ids]
            return f"{document(request, recipe)}\n\n<decisions>\n{json.dumps(items)}\n</decisions>\n\n{evaluation}"
        if recipe == "moderate":
            items = [{"id": i, "action": "fixed", "note": "Done."} for i in ids]
            return f"{document(request, recipe)}\n\n<resolutions>\n{json.dumps(items)}\n</resolutions>\n\n{evaluation}"
        return f"{document(request, recipe)}\n\n{evaluation}"

    return reply


def planned_session(owner, *, models=None, workers=("Worker",), **fields):
    """A planned-flow session: a planner, workers, a verifier and an assembler (one round)."""
    fields.setdefault("max_rounds", 1)
    roles = [("Planner", "planner"), *[(name, "worker") for name in workers], ("Verifier", "verifier")]
    roles.append(("Assembler", "assembler"))
    return team_session(owner, Flow.PLANNED, roles, models=models, **fields)


def demo_model():
    return priced_model(
        "demo", "demo-writer", input_price_per_mtok=Decimal("0"), output_price_per_mtok=Decimal("0"),
        cached_input_price_per_mtok=Decimal("0"),
    )  # fmt: skip


__all__ = ["Decimal", "editorial_session", "flow_replies", "planned_session", "roundtable_session", "team_session"]
