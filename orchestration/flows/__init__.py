"""Flows are policies over persisted state: next_step(session) -> Step | Finished.

A policy reads only the database, so any step can be re-planned after a crash and every flow
is unit-testable without I/O. The engine executes whatever Step the policy returns; a Step's calls
run concurrently. Each flow is one module here; its prompt recipes live in recipes.py and the parsing
of structured replies in structured.py. See docs/flows.md.
"""

from __future__ import annotations

from typing import Any

from orchestration.evaluation import Evaluation, parse_reply
from orchestration.flows.base import AgentCall, Finished, FlowPolicy, Output, Recipe, Step, Waiting
from orchestration.flows.editorial import EditorialFlow
from orchestration.flows.pipeline import PipelineFlow
from orchestration.flows.planned import PLANNED_RECIPES, PlannedFlow, call_material, parse_planned
from orchestration.flows.recipes import id_prefix, number_issues, recipe_text, review_material
from orchestration.flows.roundtable import RoundtableFlow, previous_resolutions
from orchestration.flows.sequential import SequentialFlow
from orchestration.flows.structured import parse_items, severity_counts, strip_blocks
from orchestration.models import Flow, Turn

POLICIES: dict[str, FlowPolicy] = {
    Flow.SEQUENTIAL: SequentialFlow(),
    Flow.EDITORIAL: EditorialFlow(),
    Flow.ROUNDTABLE: RoundtableFlow(),
    Flow.PIPELINE: PipelineFlow(),
    Flow.PLANNED: PlannedFlow(),
}


def get_policy(flow: str) -> FlowPolicy:
    try:
        return POLICIES[flow]
    except KeyError:
        raise ValueError(f"Unknown flow {flow!r}") from None


_RESULT_KIND: dict[str, str] = {Recipe.SYNTHESIZE: "decisions", Recipe.MODERATE: "resolutions"}


PIPELINE_RECIPES = (Recipe.RESEARCH, Recipe.OUTLINE, Recipe.BUILD, Recipe.REVIEW)


def parse_result(
    recipe: str,
    text: str,
    criteria: list[tuple[str, float]],
    inputs: tuple[int, ...] = (),
    passages: tuple[int, ...] = (),
    *,
    call: AgentCall | None = None,
) -> tuple[str, Evaluation, dict[str, Any]]:
    """Split a reply by its recipe: (document or "" for notes, evaluation, Turn.result). Never raises.

    critique   -> result {"issues": [...], "tier", "counts": {high, medium, low}}; no document
    synthesize -> result {"decisions": [...], "tier", "inputs": [review turn ids]}
    moderate   -> result {"resolutions": [...], "tier", "inputs": [review turn ids]}
    revise     -> result {}
    research, outline, build, review -> see flows.pipeline.parse_stage (review: the merged document)
    plan / task / verify / assemble (the planned flow, needs `call`) -> see planned.parse_planned; a
        result's "_events" [(kind, payload)] are journalled by the engine with the turn.
    """
    if call is not None and recipe in PLANNED_RECIPES:
        return parse_planned(call, text, criteria)
    document, evaluation = parse_reply(text, criteria)
    if recipe in PIPELINE_RECIPES:
        from orchestration.flows.pipeline import parse_stage

        document, result = parse_stage(recipe, document, inputs, passages)
        return document, evaluation, result
    if recipe == Recipe.CRITIQUE:
        issues, tier = parse_items(document, "issues")
        return "", evaluation, {"issues": issues, "tier": tier, "counts": severity_counts(issues)}
    kind = _RESULT_KIND.get(recipe)
    if kind is None:
        return document, evaluation, {}
    items, tier = parse_items(document, kind)
    return strip_blocks(document), evaluation, {kind: items, "tier": tier, "inputs": list(inputs)}


def review_feedback(recipe: str, inputs: tuple[int, ...]) -> list[tuple[str, str]]:
    """The reviews a synthesizer or moderator reads: [(reviewer, comments + numbered issues)], in input order."""
    turns = {
        t.pk: t for t in Turn.objects.filter(pk__in=list(inputs)).only("pk", "agent_name", "output_text", "result")
    }
    rows = [
        (pk, turns[pk].agent_name, list((turns[pk].result or {}).get("issues") or [])) for pk in inputs if pk in turns
    ]
    numbered = number_issues(rows, id_prefix(recipe))
    feedback = []
    for pk, name, _ in rows:
        comments = strip_blocks(parse_reply(turns[pk].output_text, [])[0])
        feedback.append((name, review_material(comments, [i for i in numbered if i["turn_id"] == pk])))
    return feedback


def critique_feedback(flow: str, inputs: tuple[int, ...]) -> list[tuple[str, str]]:
    """What a reviewer reads besides the document: nothing, except a roundtable critic after round 1, who
    reads the moderator's resolutions of the previous round (its call's inputs; see roundtable.next_step)."""
    if flow != Flow.ROUNDTABLE or not inputs:
        return []
    return previous_resolutions(inputs)


__all__ = [
    "AgentCall",
    "Finished",
    "FlowPolicy",
    "Output",
    "Recipe",
    "Step",
    "Waiting",
    "call_material",
    "critique_feedback",
    "get_policy",
    "parse_result",
    "recipe_text",
    "review_feedback",
]
