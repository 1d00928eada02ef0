"""Research -> plan -> build -> review (the ``pipeline`` flow).

Round 1 runs four calls one after the other, each reading the one before:
1. **research** (researcher): the passages the retriever finds for the brief (orchestration.retrieval,
   ``passages`` of them, numbered [1], [2]...) -> a summary with findings citing those numbers;
2. **outline** (planner): the outline and the sections with their goals, from the research;
3. **build** (builder): the complete draft, obeying the tone, length and format settings;
4. **review** (reviewer): scores, flags (inconsistencies, unsupported claims, policy problems) and
   find/replace edits. Atelier applies the edits mechanically where the text matches exactly once
   (flows/merge.py) and the merged text becomes the next version; the edits that could not apply are
   reported with the reason.
Later rounds (the optional loop): when the review's score is under ``revise_below``, the builder builds
again from the merged version and the review, and the reviewer reviews again, up to the session's max
rounds. The policy reads only the database; the retrieval it runs is a read too, and references cannot
change while a session runs, so re-planning after a crash picks the same passages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestration.flows.base import (
    AgentCall,
    CallShape,
    Finished,
    Output,
    Recipe,
    SlotState,
    Step,
    agents_by_role,
    last_round_started,
    round_state,
)
from orchestration.flows.editorial import validate_roles
from orchestration.models import Agent, StopReason, Turn, WritingSession

RESEARCHER, PLANNER, BUILDER, REVIEWER = "researcher", "planner", "builder", "reviewer"
TONES = ("neutral", "formal", "friendly", "persuasive", "technical")
FORMATS = ("article", "report", "blog post", "memo", "essay")
DEFAULT_CONFIG: dict[str, Any] = {
    "passages": 8,
    "tone": "neutral",
    "length_words": 800,
    "format": "article",
    "revise_below": 7.0,
}
MAX_PASSAGES = 20
MIN_WORDS, MAX_WORDS = 100, 10_000
STAGES = (
    ("researching", "Research"),
    ("planning", "Plan"),
    ("building", "Build"),
    ("review", "Review"),
)


class ConfigError(ValueError):
    """flow_config is not valid for the pipeline; the message says what to change."""


def clean_config(raw: Any) -> dict[str, Any]:
    """Validate a pipeline flow_config and fill in defaults. Raises ConfigError with a clear message.

    Shape: {"passages": 1-20, "tone": one of TONES, "length_words": 100-10000, "format": one of FORMATS,
    "revise_below": score 0-10 or null (null: never build again)}.
    """
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("The pipeline settings must be an object.")
    unknown = sorted(set(raw) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(f"Unknown pipeline setting(s): {', '.join(unknown)}.")
    config = {**DEFAULT_CONFIG, **raw}
    passages = config["passages"]
    if isinstance(passages, bool) or not isinstance(passages, int) or not 1 <= passages <= MAX_PASSAGES:
        raise ConfigError(f"Passages to research must be a whole number from 1 to {MAX_PASSAGES}.")
    if config["tone"] not in TONES:
        raise ConfigError(f"Tone must be one of: {', '.join(TONES)}.")
    if config["format"] not in FORMATS:
        raise ConfigError(f"Format must be one of: {', '.join(FORMATS)}.")
    words = config["length_words"]
    if isinstance(words, bool) or not isinstance(words, int) or not MIN_WORDS <= words <= MAX_WORDS:
        raise ConfigError(f"Length must be a whole number of words from {MIN_WORDS} to {MAX_WORDS:,}.")
    threshold = config["revise_below"]
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold <= 10:
            raise ConfigError("“Build again when the review scores under” must be a score above 0 and at most 10.")
        config["revise_below"] = float(threshold)
    return config


def retrieval_query(session: WritingSession) -> str:
    """What the research stage searches the references for: the title and the brief."""
    return f"{session.title}\n{session.brief}"


def research_passages(session: WritingSession, k: int) -> tuple[int, ...]:
    """The passage ids the researcher reads, best first: the retriever's hits for the brief; when nothing
    matches (a brief in another language, say), the opening passages of each reference instead."""
    return find_passages(retrieval_query(session), k=k, session=session)


def find_passages(
    query: str, *, k: int, session: WritingSession | None = None, project: int | None = None
) -> tuple[int, ...]:
    """Up to `k` passage ids for `query` among one session's references (`session`) or every reference of a
    project's sessions (`project`, a pipeline conversation), best first; when nothing matches, the opening
    passages of the references instead. A read only: the same references give the same passages."""
    from orchestration.models import Passage
    from orchestration.retrieval import search

    hits = [hit.passage_id for hit in search(query, session=session, project=project, k=k)]
    if hits:
        return tuple(hits)
    scope = (
        Passage.objects.filter(session=session)
        if session is not None
        else Passage.objects.filter(session__project=project)
    )
    openings = scope.order_by("ordinal", "reference_id").values_list("pk", flat=True)
    return tuple(openings[:k])


class PipelineFlow:
    name = "pipeline"
    description = (
        "A researcher summarises the passages retrieved from your references, with citations; a planner "
        "outlines; a builder writes the full draft to your tone, length and format; a reviewer scores it, "
        "flags problems and proposes edits that Atelier applies where the text matches."
    )
    diagram = "Research → Plan → Build → Review → (score under threshold? build again)"
    roles = (RESEARCHER, PLANNER, BUILDER, REVIEWER)
    phases = STAGES

    def next_step(self, session: WritingSession) -> Step | Finished:
        roles = agents_by_role(session)
        members = {role: roles.get(role) or [] for role in self.roles}
        if not all(members.values()):
            return Finished(StopReason.ERROR, "The pipeline needs a researcher, a planner, a builder and a reviewer.")
        team = {role: ids[0] for role, ids in members.items()}
        try:
            config = clean_config(session.flow_config)
        except ConfigError as error:
            return Finished(StopReason.ERROR, str(error))
        first = round_state(session, 1)
        research, outline = first.get("research"), first.get("outline")
        if research is None or research.turn_id is None or outline is None or outline.turn_id is None:
            return self._groundwork(session, config, team, research)
        round_number = max(1, last_round_started(session))
        previous_review: int | None = None
        if round_number > 1:
            earlier = round_state(session, round_number - 1).get("review")
            previous_review = earlier.turn_id if earlier else None
        while True:
            if round_number > session.max_rounds:
                return Finished(StopReason.MAX_ROUNDS, f"Built and reviewed {session.max_rounds} times.")
            state = first if round_number == 1 else round_state(session, round_number)
            build = state.get("build")
            if build is None or build.turn_id is None:
                inputs = (research.turn_id, outline.turn_id) + ((previous_review,) if previous_review else ())
                call = AgentCall(
                    team[BUILDER],
                    slot="build",
                    recipe=Recipe.BUILD,
                    output=Output.DOCUMENT,
                    inputs=inputs,
                    phase="building",
                )
                return Step(round=round_number, calls=[call], phase="building")
            review = state.get("review")
            if review is None or review.turn_id is None:
                call = AgentCall(
                    team[REVIEWER],
                    slot="review",
                    recipe=Recipe.REVIEW,
                    output=Output.DOCUMENT,  # the merged version: the draft with the applicable edits
                    inputs=(build.turn_id, research.turn_id),
                    phase="review",
                )
                return Step(round=round_number, calls=[call], phase="review")
            decision = self._after_review(session, config, round_number, review.turn_id)
            if decision is not None:
                return decision
            previous_review = review.turn_id
            round_number += 1

    def _groundwork(
        self, session: WritingSession, config: dict[str, Any], team: dict[str, int], research: SlotState | None
    ) -> Step:
        """Round 1's groundwork still to write: the research, or (once it is written) the outline."""
        if research is None or research.turn_id is None:
            passages = research_passages(session, config["passages"])
            call = AgentCall(
                team[RESEARCHER],
                slot="research",
                recipe=Recipe.RESEARCH,
                output=Output.NOTES,
                phase="researching",
                passages=passages,
            )
            return Step(round=1, calls=[call], phase="researching")
        call = AgentCall(
            team[PLANNER],
            slot="outline",
            recipe=Recipe.OUTLINE,
            output=Output.NOTES,
            inputs=(research.turn_id,),
            phase="planning",
        )
        return Step(round=1, calls=[call], phase="planning")

    def _after_review(
        self, session: WritingSession, config: dict[str, Any], round_number: int, review_id: int
    ) -> Finished | None:
        """Finished when the pipeline is done after this round's review; None to build again."""
        score, result = Turn.objects.filter(pk=review_id).values_list("overall_score", "result").first() or (None, {})
        applied = (result or {}).get("applied", 0)
        proposed = len((result or {}).get("edits") or [])
        edits = (
            f"{applied} of {proposed} proposed edit{'s' if proposed != 1 else ''} applied"
            if proposed
            else "the review proposed no edits"
        )
        threshold = config["revise_below"]
        if threshold is None:
            return Finished(StopReason.PIPELINE_DONE, f"Researched, planned, built and reviewed; {edits}.")
        if score is None:
            return Finished(StopReason.PIPELINE_DONE, f"The review gave no score, so no rebuild; {edits}.")
        if round_number <= session.continued_at_round:
            return None  # "continue for more rounds" asked for another pass whatever this score was
        if score >= threshold:
            return Finished(
                StopReason.SCORE_THRESHOLD, f"The review scored {score:.1f} (at least {threshold:g}); {edits}."
            )
        if round_number >= session.max_rounds:
            return Finished(
                StopReason.MAX_ROUNDS,
                f"The review scored {score:.1f}, under {threshold:g}, after {round_number} build"
                f"{'s' if round_number != 1 else ''} (the maximum); {edits}.",
            )
        return None

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        problems = validate_roles(
            agents,
            required={RESEARCHER: (1, 1), PLANNER: (1, 1), BUILDER: (1, 1), REVIEWER: (1, 1)},
            flow_label="The pipeline",
        )
        try:
            clean_config(session.flow_config)
        except ConfigError as error:
            problems.append(str(error))
        return problems

    def reference_tokens(self, session: WritingSession) -> int:
        """At most what a call reads of the references: ``passages`` passages of at most MAX_CHARS
        characters (for the credit estimate, billing.pricing)."""
        from orchestration.retrieval import MAX_CHARS
        from orchestration.tokens import estimate_tokens

        try:
            passages: int = clean_config(session.flow_config)["passages"]
        except ConfigError:
            passages = DEFAULT_CONFIG["passages"]
        return passages * (estimate_tokens("x" * MAX_CHARS) + 16)

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        by_role = agents_by_role(session)
        first = (
            frozenset(by_role.get(RESEARCHER, [])[:1] + by_role.get(PLANNER, [])[:1])
            if session.current_round == 0
            else frozenset()
        )
        return CallShape(
            calls_per_round=[1 if (r or "").strip().lower() in (BUILDER, REVIEWER) else 0 for r in roles],
            reviewer_roles=(REVIEWER,),
            reader_roles=(BUILDER,),
            extra_first_round_calls=first,
        )


# --- what each stage reads (used by the engine when it builds the prompt) -------------------------


@dataclass(frozen=True)
class Material:
    """A pipeline call's prompt material: references (numbered passages), teammates' output, instruction."""

    references: list[tuple[str, str]]
    feedback: list[tuple[str, str]]
    instruction: str | None = None


def source_title(number: int, title: str, ordinal: int, heading: str) -> str:
    """How a numbered source is labelled in prompts: "[3] Trees, passage 2 (Storm water)"."""
    label = f"[{number}] {title}, passage {ordinal}"
    return f"{label} ({heading})" if heading else label


def sources_of(passage_ids: tuple[int, ...] | list[int]) -> list[dict[str, Any]]:
    """Numbered sources for passage ids, in order: [{n, passage_id, reference_id, title, ordinal, heading}]."""
    from orchestration.retrieval import hydrate

    hits = hydrate([(pk, 0.0) for pk in passage_ids])
    return [
        {
            "n": n,
            "passage_id": hit.passage_id,
            "reference_id": hit.reference_id,
            "title": hit.reference_title,
            "ordinal": hit.ordinal,
            "heading": hit.heading,
        }
        for n, hit in enumerate(hits, start=1)
    ]


def _source_material(sources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    from orchestration.models import Passage

    texts = dict(Passage.objects.filter(pk__in=[s["passage_id"] for s in sources]).values_list("pk", "text"))
    return [
        (source_title(s["n"], s["title"], s["ordinal"], s["heading"]), texts.get(s["passage_id"], "")) for s in sources
    ]


def _reply_body(turn: Turn) -> str:
    from orchestration.evaluation import parse_reply

    return parse_reply(turn.output_text, [])[0].strip()


def review_notes(turn: Turn) -> str:
    """A review as the next build reads it: comments, flags, and the edits that could not be applied."""
    result = turn.result or {}
    lines = [result.get("comments", "").strip()] if result.get("comments") else []
    for flag in result.get("flags") or []:
        quote = f" “{flag['passage']}”" if flag.get("passage") else ""
        lines.append(f"- [{flag.get('kind', 'other')}]{quote}: {flag.get('note', '')}")
    skipped = [e for e in result.get("edits") or [] if not e.get("applied")]
    if skipped:
        lines.append("Edits that could not be applied (make them yourself where they still make sense):")
        for edit in skipped:
            lines.append(f"- replace “{edit['find']}” with “{edit['replace']}” ({edit.get('reason', '')})")
    return "\n".join(lines) or "(No comments.)"


def build_instruction(config: dict[str, Any], *, rebuild: bool) -> str:
    """The builder's closing instruction, carrying the owner's tone, length and format settings."""
    what = "the complete improved document" if rebuild else "the complete document"
    return (
        f"Settings from the owner of this session: format: {config['format']}; tone: {config['tone']}; "
        f"length: about {config['length_words']:,} words. Now return {what} in Markdown, following the outline "
        "and citing sources as [n], then your <evaluation>."
    )


def material(session: WritingSession, call: AgentCall) -> Material:
    """What a pipeline call reads: the numbered passages and the earlier stages' output."""
    if call.recipe == Recipe.RESEARCH:
        return Material(references=_source_material(sources_of(call.passages)), feedback=[])
    turns = {t.pk: t for t in Turn.objects.filter(pk__in=list(call.inputs))}
    by_recipe = {turns[pk].recipe: turns[pk] for pk in call.inputs if pk in turns}
    research = by_recipe.get(Recipe.RESEARCH)
    sources = (research.result or {}).get("sources", []) if research else []
    references = _source_material(sources)
    feedback = [("Researcher", _reply_body(research))] if research else []
    if call.recipe == Recipe.OUTLINE:
        return Material(references=references, feedback=feedback)
    if call.recipe == Recipe.BUILD:
        outline = by_recipe.get(Recipe.OUTLINE)
        if outline is not None:
            feedback.append(("Planner", _reply_body(outline)))
        review = by_recipe.get(Recipe.REVIEW)
        if review is not None:
            feedback.append(("Reviewer", review_notes(review)))
        try:
            config = clean_config(session.flow_config)
        except ConfigError:
            config = dict(DEFAULT_CONFIG)
        return Material(references, feedback, build_instruction(config, rebuild=review is not None))
    return Material(references=references, feedback=feedback)


# --- parsing the stages' replies (flows.parse_result) ---------------------------------------------


def parse_stage(
    recipe: str, body: str, inputs: tuple[int, ...], passages: tuple[int, ...]
) -> tuple[str, dict[str, Any]]:
    """(document or "", Turn.result) for a pipeline reply whose evaluation is already split off. Never raises.

    research -> ("", {"summary", "findings": [{text, citations}], "sources": [...], "cited", "unknown_citations"})
    outline  -> ("", {"title", "sections": [{title, goal, sources}], "tier"})
    build    -> (draft, {"cited", "unknown_citations"})
    review   -> (merged draft, {"comments", "flags", "edits": [{n, find, replace, reason, applied, why_not}],
                 "applied", "not_applied", "tier": {"edits", "flags"}, "base_turn"})
    """
    from orchestration.flows.merge import apply_edits, citations_in, parse_edits, parse_findings, parse_flags
    from orchestration.flows.merge import parse_sections as parse_outline
    from orchestration.flows.structured import strip_blocks

    if recipe == Recipe.RESEARCH:
        sources = sources_of(passages)
        cited = citations_in(body)
        known = {s["n"] for s in sources}
        return "", {
            "summary": body[:20_000],
            "findings": parse_findings(body),
            "gaps": [item["text"] for item in parse_findings(body, "gap")],
            "sources": sources,
            "cited": [n for n in cited if n in known],
            "unknown_citations": [n for n in cited if n not in known],
        }
    if recipe == Recipe.OUTLINE:
        sections, tier = parse_outline(body)
        title = next((line[2:].strip() for line in body.splitlines() if line.startswith("# ")), "")
        return "", {"title": title[:200], "sections": sections, "tier": tier}
    known = _known_sources(inputs)
    if recipe == Recipe.BUILD:
        cited = citations_in(body)
        return body, {
            "cited": [n for n in cited if n in known],
            "unknown_citations": [n for n in cited if n not in known],
        }
    # review
    edits, edit_tier = parse_edits(body)
    flags, flag_tier = parse_flags(body)
    base_id = inputs[0] if inputs else None
    base_turn = Turn.objects.filter(pk=base_id).only("output_text").first() if base_id else None
    base = _reply_body(base_turn) if base_turn else ""
    merged, results = apply_edits(base, edits)
    comments = strip_blocks(_strip_tags(body, ("edits", "flags"))).strip()
    applied = sum(1 for r in results if r.applied)
    cited = citations_in(merged)
    return merged, {
        "comments": comments[:5000],
        "flags": flags,
        "edits": [r.as_dict() for r in results],
        "applied": applied,
        "not_applied": len(results) - applied,
        "tier": {"edits": edit_tier, "flags": flag_tier},
        "base_turn": base_id,
        "cited": [n for n in cited if n in known],
        "unknown_citations": [n for n in cited if n not in known],
    }


def _strip_tags(text: str, tags: tuple[str, ...]) -> str:
    for tag in tags:
        text = re.sub(rf"<{tag}>.*?</{tag}>", "", text, flags=re.S | re.I)
    return text


def _known_sources(inputs: tuple[int, ...]) -> set[int]:
    for result in Turn.objects.filter(pk__in=list(inputs), recipe=Recipe.RESEARCH).values_list("result", flat=True):
        return {s["n"] for s in (result or {}).get("sources", [])}
    return set()
