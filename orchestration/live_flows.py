"""What the live page adds for the parallel flows: grouped columns, readable critiques, phases, the report.

Kept apart from live.py (the transcript itself) so each can change without the other. Everything here
reads the database only; live.py's page and fragment rendering call into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.safestring import mark_safe

from orchestration.evaluation import split_output
from orchestration.flows import PIPELINE_RECIPES, Recipe, get_policy
from orchestration.flows.planned import PLANNED_RECIPES
from orchestration.flows.recipes import id_prefix, number_issues
from orchestration.flows.structured import strip_blocks
from orchestration.models import Flow, Turn, WritingSession
from orchestration.rendering import render_markdown

GROUP_TEMPLATE = "orchestration/partials/live_parallel.html"
REPORT_TEMPLATE = "orchestration/partials/live_report.html"

# slot prefix -> phase (the flows' slot names, see orchestration/flows/*.py)
_SLOT_PHASES = (
    ("review:", "reviewing"),
    ("write", "writing"),
    ("synthesize", "synthesizing"),
    ("draft", "drafting"),
    ("moderate", "moderating"),
    # the pipeline (flows/pipeline.py): one call per stage
    ("research", "researching"),
    ("outline", "planning"),
    ("build", "building"),
    ("review", "review"),
    # The planned flow (orchestration/flows/planned.py): tasks and their checks run side by side.
    ("plan", "planning"),
    ("task:", "working"),
    ("repair:", "working"),
    ("next:", "working"),
    ("verify:", "working"),
    ("assemble", "assembling"),
)
PARALLEL_PHASES = {"reviewing", "working"}

# What one page render shares between cards: (session id, round) -> that round's numbered issues;
# ("sources", session id) -> the research sources.
ReviewCache = dict[tuple[int | str, int], Any]


def phase_of(slot: str) -> str:
    for prefix, phase in _SLOT_PHASES:
        if slot.startswith(prefix):
            return phase
    return "writing"


def group_id(round_number: int, phase: str) -> str:
    return f"round-{round_number}-{phase}"


def parallel_group(turn: Turn) -> str | None:
    """The phase whose calls run side by side that this turn belongs to, if any."""
    phase = phase_of(turn.slot or "")
    return phase if phase in PARALLEL_PHASES else None


def group_html(round_number: int, phase: str) -> str:
    return render_to_string(
        GROUP_TEMPLATE, {"block": {"group": phase, "id": group_id(round_number, phase), "items": []}}
    )


def round_blocks(round_number: int, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive turns of one parallel phase become one block shown as columns; others stay single."""
    blocks: list[dict[str, Any]] = []
    for item in items:
        group = parallel_group(item["turn"])
        if group and blocks and blocks[-1]["group"] == group:
            blocks[-1]["items"].append(item)
        elif group:
            blocks.append({"group": group, "id": group_id(round_number, group), "items": [item]})
        else:
            blocks.append({"group": None, "items": [item]})
    return blocks


# --- Readable critiques, and decisions that link back to them ---------------------------------------


def _numbered_round_issues(session_id: int, round_number: int, recipe_prefix: str) -> dict[int, list[dict[str, Any]]]:
    """Review turn id -> its numbered issues, numbered over the round's completed reviews in team order."""
    reviews = list(
        Turn.objects.filter(
            session_id=session_id,
            round=round_number,
            slot__startswith="review:",
            status=Turn.TurnStatus.COMPLETED,
        )
        .select_related("agent")
        .only("pk", "agent_name", "result", "agent__order", "agent__id")
    )
    reviews.sort(key=lambda t: (t.agent.order, t.agent.pk) if t.agent else (999, t.pk))
    numbered = number_issues(
        [(t.pk, t.agent_name, list((t.result or {}).get("issues") or [])) for t in reviews], recipe_prefix
    )
    by_turn: dict[int, list[dict[str, Any]]] = {}
    for issue in numbered:
        by_turn.setdefault(issue["turn_id"], []).append(issue)
    return by_turn


def _prefix_for(session_flow: str) -> str:
    return id_prefix(Recipe.SYNTHESIZE if session_flow == Flow.EDITORIAL else Recipe.MODERATE)


def review_context(turn: Turn, flow: str, cache: ReviewCache | None = None) -> dict[str, Any] | None:
    """What a parallel-flow card shows besides its text: issues, decisions/resolutions, or 'missing'."""
    result = turn.result if isinstance(turn.result, dict) else {}
    cache = {} if cache is None else cache
    if result.get("given_up"):
        return {"missing": True, "error": result.get("error", "")}
    if turn.status != Turn.TurnStatus.COMPLETED or turn.recipe in ("", Recipe.REVISE, *PLANNED_RECIPES):
        return None
    if turn.recipe in PIPELINE_RECIPES:
        return pipeline_context(turn, cache)
    key = (turn.session_id, turn.round)
    if key not in cache:
        cache[key] = _numbered_round_issues(turn.session_id, turn.round, _prefix_for(flow))
    numbered = cache[key]
    if turn.recipe == Recipe.CRITIQUE:
        return {"issues": numbered.get(turn.pk, []), "tier": result.get("tier", ""), "counts": result.get("counts", {})}
    kind = "decisions" if turn.recipe == Recipe.SYNTHESIZE else "resolutions"
    where = {issue["id"]: issue for issues in numbered.values() for issue in issues}
    items = []
    for item in result.get(kind) or []:
        issue = where.get(item.get("id", ""))
        items.append({**item, "issue": issue})
    answered = {i.get("id") for i in items}
    unanswered = [i for i in where.values() if i["id"] not in answered]
    return {"kind": kind, "items": items, "tier": result.get("tier", ""), "unanswered": unanswered}


def critique_body_html(turn: Turn, cache: ReviewCache | None = None) -> str | None:
    """A finished critique shows its comments; the issues are listed apart, never as raw JSON.
    A finished pipeline stage shows its text without the structured blocks, its citations linked."""
    if turn.status != Turn.TurnStatus.COMPLETED:
        return None
    if turn.recipe in (Recipe.PLAN, Recipe.VERIFY):  # the planned flow: what it decided, in words
        return planned_body_html(turn)
    if turn.recipe in PIPELINE_RECIPES:
        from orchestration.pipeline_report import link_citations

        text = split_output(turn.output_text)[0]
        if turn.recipe == Recipe.REVIEW:
            text = (turn.result or {}).get("comments") or ""
        html = render_markdown(strip_blocks(_strip_pipeline_blocks(text)))
        return mark_safe(link_citations(str(html), _sources(turn.session_id, cache)))  # noqa: S308 (sanitized above)
    if turn.recipe != Recipe.CRITIQUE:
        return None
    return render_markdown(strip_blocks(split_output(turn.output_text)[0]))


def _strip_pipeline_blocks(text: str) -> str:
    return re.sub(r"<(sections|edits|flags)>.*?</\1>", "", text, flags=re.S | re.I)


def _sources(session_id: int, cache: ReviewCache | None) -> list[dict[str, Any]]:
    from orchestration.pipeline_report import research_sources

    cache = {} if cache is None else cache
    key = ("sources", session_id)
    if key not in cache:
        cache[key] = research_sources(session_id)
    sources: list[dict[str, Any]] = cache[key]
    return sources


def pipeline_context(turn: Turn, cache: ReviewCache | None = None) -> dict[str, Any]:
    """What a pipeline stage's card shows besides its text (templates/.../live_pipeline.html)."""
    from orchestration.pipeline_report import link_citations

    result = turn.result if isinstance(turn.result, dict) else {}
    context: dict[str, Any] = {"pipeline": True, "recipe": turn.recipe, **result}
    if turn.recipe == Recipe.RESEARCH:
        sources = result.get("sources") or []
        context["findings"] = [
            {**f, "html": mark_safe(link_citations(str(escape(f.get("text", ""))), sources))}  # noqa: S308 (escaped)
            for f in result.get("findings") or []
        ]
    return context


def planned_body_html(turn: Turn) -> str:
    from django.utils.html import format_html, format_html_join

    result = turn.result if isinstance(turn.result, dict) else {}
    if turn.recipe == Recipe.VERIFY:
        verdict = "Pass" if result.get("verdict") == "pass" else "Fail"
        return format_html("<p><strong>{}</strong> — {}</p>", verdict, result.get("notes", ""))
    if result.get("valid"):
        items = format_html_join("", "<li>{} — {}</li>", ((t["id"], t["title"]) for t in result.get("tasks", [])))
        return format_html(
            "<p>A task graph of {} tasks (shown in the plan above):</p><ul>{}</ul>", len(result["tasks"]), items
        )
    errors = format_html_join("", "<li>{}</li>", ((e,) for e in result.get("errors") or []))
    return format_html("<p>The task graph was invalid:</p><ul>{}</ul>", errors)


# --- Phases of the current round ------------------------------------------------------------------------


@dataclass
class Phase:
    key: str
    label: str
    planned: int
    done: int = 0
    running: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.planned and self.done >= self.planned:
            return "done"
        return "active" if self.running or self.done else "pending"


def phases(session: WritingSession) -> list[Phase] | None:
    """The current round's phases with progress (writing -> reviewing (2 of 3 done) -> synthesizing)."""
    if session.flow == Flow.SEQUENTIAL or session.current_round < 1:
        return None
    if session.flow == Flow.PLANNED:
        from orchestration.live_plan import planned_phases

        return planned_phases(session)
    policy = get_policy(session.flow)
    roles = list(session.agents.filter(active=True).values_list("role", flat=True))
    reviewers = sum(1 for r in roles if (r or "").strip().lower() in ("editor", "critic"))
    turns = list(
        Turn.objects.filter(session=session, round=session.current_round, kind=Turn.Kind.AGENT)
        .exclude(slot="")
        .values_list("slot", "status", "result", "agent_name")
    )
    result: list[Phase] = []
    for key, label in policy.phases:
        slots = [t for t in turns if phase_of(t[0]) == key]
        if key == "drafting" and not slots:
            continue  # the roundtable drafts only when it starts without a document
        if key in ("researching", "planning") and session.flow == Flow.PIPELINE and session.current_round > 1:
            continue  # the pipeline researches and plans once; later rounds build and review again
        phase = Phase(key=key, label=label, planned=reviewers if key in PARALLEL_PHASES else 1)
        done_slots: set[str] = set()
        for slot, status, res, name in slots:
            if status == Turn.TurnStatus.COMPLETED:
                done_slots.add(slot)
            elif isinstance(res, dict) and res.get("given_up"):
                done_slots.add(slot)
                phase.missing.append(name)
        phase.done = len(done_slots)
        phase.running = sum(
            1 for slot, status, _, _ in slots if status == Turn.TurnStatus.STREAMING and slot not in done_slots
        )
        result.append(phase)
    return result


# --- The convergence report ------------------------------------------------------------------------------


REPORT_FLOWS = (Flow.ROUNDTABLE, Flow.PIPELINE)  # flows with a report under the transcript


def report_html(session: WritingSession) -> str:
    from orchestration.flows.roundtable import convergence_report

    if session.flow == Flow.PIPELINE:
        from orchestration.pipeline_report import pipeline_report

        return render_to_string(
            "orchestration/partials/live_pipeline_report.html", {"session": session, "report": pipeline_report(session)}
        )
    if session.flow != Flow.ROUNDTABLE:
        return ""
    return render_to_string(REPORT_TEMPLATE, {"session": session, "report": convergence_report(session)})
