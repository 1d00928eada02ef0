"""What the pipeline's page and exports show: sources used, review comments and edits, usage and cost per
stage; and the citation links ([n] -> the passage on the page).

Reads the database only. The live page renders ``report`` in the flow's report slot
(templates/orchestration/partials/live_pipeline_report.html); ``/sessions/<id>/report.md|json`` exports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils.html import escape

from orchestration.flows import Recipe
from orchestration.flows.merge import citations_in
from orchestration.models import Passage, Turn, WritingSession

STAGE_LABELS: dict[str, str] = {
    Recipe.RESEARCH: "Research",
    Recipe.OUTLINE: "Plan",
    Recipe.BUILD: "Build",
    Recipe.REVIEW: "Review",
}


@dataclass
class Source:
    n: int
    passage_id: int
    title: str
    ordinal: int
    heading: str
    text: str
    cited_in_final: bool

    @property
    def anchor(self) -> str:
        return f"passage-{self.passage_id}"


@dataclass
class StageUsage:
    round: int
    stage: str
    agent: str
    status: str
    input_tokens: int
    output_tokens: int
    credits: int
    cost: Decimal
    latency_ms: int | None
    score: float | None


@dataclass
class PipelineReport:
    sources: list[Source] = field(default_factory=list)
    stages: list[StageUsage] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)  # per round: score, comments, flags, edits
    unknown_citations: list[int] = field(default_factory=list)  # [n] in the final document that is no source
    gaps: list[str] = field(default_factory=list)

    @property
    def total_credits(self) -> int:
        return sum(s.credits for s in self.stages)

    @property
    def total_cost(self) -> Decimal:
        return sum((s.cost for s in self.stages), Decimal("0"))

    @property
    def sources_used(self) -> list[Source]:
        return [s for s in self.sources if s.cited_in_final]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": [
                {
                    "n": s.n,
                    "passage_id": s.passage_id,
                    "reference": s.title,
                    "passage": s.ordinal,
                    "heading": s.heading,
                    "text": s.text,
                    "cited_in_final": s.cited_in_final,
                }
                for s in self.sources
            ],
            "stages": [
                {
                    "round": s.round,
                    "stage": s.stage,
                    "agent": s.agent,
                    "status": s.status,
                    "input_tokens": s.input_tokens,
                    "output_tokens": s.output_tokens,
                    "credits": s.credits,
                    "provider_cost_usd": str(s.cost),
                    "latency_ms": s.latency_ms,
                    "score": s.score,
                }
                for s in self.stages
            ],
            "reviews": self.reviews,
            "unknown_citations": self.unknown_citations,
            "gaps": self.gaps,
            "total_credits": self.total_credits,
            "total_provider_cost_usd": str(self.total_cost),
        }


def research_sources(session_id: int) -> list[dict[str, Any]]:
    """The numbered sources of the session's completed research turn ([] before it exists)."""
    result = (
        Turn.objects.filter(session_id=session_id, recipe=Recipe.RESEARCH, status=Turn.TurnStatus.COMPLETED)
        .order_by("-pk")
        .values_list("result", flat=True)
        .first()
    )
    return list((result or {}).get("sources") or [])


def pipeline_report(session: WritingSession) -> PipelineReport:
    """Sources (each marked used when the final document cites it), usage per stage, review outcomes."""
    report = PipelineReport()
    turns = list(Turn.objects.filter(session=session, kind=Turn.Kind.AGENT).exclude(slot="").order_by("round", "pk"))
    research = next((t for t in reversed(turns) if t.recipe == Recipe.RESEARCH and t.status == "completed"), None)
    sources = list((research.result or {}).get("sources") or []) if research else []
    report.gaps = list((research.result or {}).get("gaps") or []) if research else []
    texts = dict(Passage.objects.filter(pk__in=[s["passage_id"] for s in sources]).values_list("pk", "text"))
    cited = citations_in(session.document)
    known = {s["n"] for s in sources}
    report.unknown_citations = [n for n in cited if n not in known]
    for s in sources:
        report.sources.append(
            Source(
                n=s["n"],
                passage_id=s["passage_id"],
                title=s["title"],
                ordinal=s["ordinal"],
                heading=s.get("heading", ""),
                text=texts.get(s["passage_id"], "(this passage no longer exists)"),
                cited_in_final=s["n"] in cited,
            )
        )
    for turn in turns:
        report.stages.append(
            StageUsage(
                round=turn.round,
                stage=STAGE_LABELS.get(turn.recipe, turn.recipe),
                agent=turn.agent_name,
                status=turn.status,
                input_tokens=turn.input_tokens,
                output_tokens=turn.output_tokens,
                credits=turn.credits,
                cost=turn.provider_cost,
                latency_ms=turn.latency_ms,
                score=turn.overall_score,
            )
        )
        if turn.recipe == Recipe.REVIEW and turn.status == Turn.TurnStatus.COMPLETED:
            result = turn.result or {}
            report.reviews.append(
                {
                    "round": turn.round,
                    "turn_id": turn.pk,
                    "score": turn.overall_score,
                    "scores": turn.scores,
                    "comments": result.get("comments", ""),
                    "flags": result.get("flags") or [],
                    "edits": result.get("edits") or [],
                    "applied": result.get("applied", 0),
                    "not_applied": result.get("not_applied", 0),
                }
            )
    return report


_TAG_SPLIT = re.compile(r"(<[^>]*>)")
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")


def link_citations(html: str, sources: list[dict[str, Any]], *, base: str = "") -> str:
    """Turn [n] / [n, m] in already-sanitized HTML text into links to the passages on the page.

    Only text between tags is touched (never attributes); numbers that are not sources stay plain text
    and are marked, so a made-up citation is visible. Each link is built here from integers only (and
    ``base``, a path from reverse(), so the document page can link to the passages on the live page).
    """
    anchors = {s["n"]: s["passage_id"] for s in sources}

    def one(number: str) -> str:
        n = int(number)
        if n in anchors:
            href = f"{escape(base)}#passage-{anchors[n]}"
            return f'<a class="citation" href="{href}" data-testid="citation" title="Source {n}">{n}</a>'
        return f'<span class="citation citation-unknown" title="No source has this number">{n}?</span>'

    def replace(match: re.Match[str]) -> str:
        numbers = re.split(r"\s*[,;]\s*", match.group(1))
        return "[" + ", ".join(one(n) for n in numbers) + "]"

    parts = _TAG_SPLIT.split(html)
    inside_link = False
    for i, part in enumerate(parts):
        if part.startswith("<"):
            lowered = part.lower()
            if lowered.startswith("<a ") or lowered == "<a>":
                inside_link = True
            elif lowered.startswith("</a"):
                inside_link = False
            continue
        if not inside_link:
            parts[i] = _CITATION.sub(replace, part)
    return "".join(parts)


def report_markdown(session: WritingSession, report: PipelineReport) -> str:
    """The report as Markdown for the export."""
    lines = [f"# Pipeline report: {session.title}", ""]
    if session.stop_detail:
        lines += [f"**Outcome:** {session.stop_detail}", ""]
    lines += ["## Sources", ""]
    for s in report.sources:
        used = "used in the final version" if s.cited_in_final else "not cited in the final version"
        heading = f" ({s.heading})" if s.heading else ""
        lines.append(f"[{s.n}] {s.title}, passage {s.ordinal}{heading} · {used}")
        lines.append("")
        lines += [f"> {line}" if line else ">" for line in s.text.splitlines()]
        lines.append("")
    if report.unknown_citations:
        lines += [f"Citations to no source in the final version: {', '.join(map(str, report.unknown_citations))}", ""]
    lines += ["## Reviews", ""]
    for review in report.reviews:
        score = "no score" if review["score"] is None else f"{review['score']:.1f}/10"
        lines += [f"### Round {review['round']} · {score}", "", review["comments"] or "(No comments.)", ""]
        for flag in review["flags"]:
            quote = f" “{flag['passage']}”" if flag.get("passage") else ""
            lines.append(f"- Flag ({flag['kind']}){quote}: {flag['note']}")
        for edit in review["edits"]:
            outcome = "applied" if edit["applied"] else f"not applied ({edit['why_not']})"
            lines.append(f"- Edit {edit['n']}: “{edit['find']}” → “{edit['replace']}” · {outcome} · {edit['reason']}")
        lines.append("")
    lines += ["## Usage per stage", "", "| Round | Stage | Agent | Status | Tokens in / out | Credits | Cost (USD) |"]
    lines.append("|---|---|---|---|---|---|---|")
    for st in report.stages:
        lines.append(
            f"| {st.round} | {st.stage} | {st.agent} | {st.status} | {st.input_tokens} / {st.output_tokens} | "
            f"{st.credits} | {st.cost:.6f} |"
        )
    lines += ["", f"Total: {report.total_credits} credits, ${report.total_cost:.6f} provider cost.", ""]
    return "\n".join(lines)
