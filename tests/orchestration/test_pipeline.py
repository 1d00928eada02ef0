"""The research -> plan -> build -> review pipeline: the policy over database states (no I/O), the
mechanical merge of reviewer edits, the parsing of the stages' replies and citations to real passages."""

from __future__ import annotations

import json

import pytest

from orchestration import services
from orchestration.flows import Finished, Output, Recipe, Step, get_policy, parse_result
from orchestration.flows.merge import apply_edits, citations_in, parse_edits, parse_flags, parse_sections
from orchestration.flows.pipeline import ConfigError, clean_config, research_passages
from orchestration.models import Flow, Passage, ReferenceDocument, StopReason, Turn
from tests.orchestration.flow_helpers import team_session

pytestmark = pytest.mark.django_db

NOTES = """# Shade

Street trees cool the pavement by several degrees in summer.

## Storm water

Roots and crowns slow storm water, so drains overflow less often.

## Birds

Sparrows nest in hedges and under roof tiles.
"""

# --- the merge ------------------------------------------------------------------------------------

DRAFT = "# Trees\n\nTrees cool streets. Trees cool streets.\n\nShade  lowers\nbills a lot.\n\nRain drains slower.\n"


def test_edits_apply_where_the_text_matches_once_and_the_rest_are_reported():
    edits = [
        {"find": "Rain drains slower.", "replace": "Storm water drains slower [2].", "reason": "Cite it."},
        {"find": "Trees cool streets.", "replace": "Trees cool streets [1].", "reason": "Ambiguous."},
        {"find": "Snow melts.", "replace": "Ice melts.", "reason": "Not in the text."},
        {"find": "Shade lowers bills a lot.", "replace": "Shade lowers bills.", "reason": "Whitespace differs."},
        {"find": "   ", "replace": "x", "reason": "Empty."},
        {"find": "# Trees", "replace": "# Trees", "reason": "No-op."},
        {"find": "Rain drains slower.", "replace": "Gone.", "reason": "Already changed by edit 1."},
    ]
    merged, results = apply_edits(DRAFT, edits)
    assert [r.applied for r in results] == [True, False, False, True, False, False, False]
    assert [r.why_not for r in results] == [
        "",
        "ambiguous: found 2 times",
        "not found",
        "",
        "empty find text",
        "no change",
        "not found",
    ]
    assert "Storm water drains slower [2]." in merged and "Rain drains slower." not in merged
    assert "Shade lowers bills." in merged and "a lot" not in merged
    assert merged.count("Trees cool streets.") == 2  # the ambiguous edit changed nothing


def test_a_loose_match_that_occurs_twice_is_ambiguous_too():
    merged, results = apply_edits("a  b\n\na b\n", [{"find": "a\tb", "replace": "c"}])
    assert not results[0].applied and results[0].why_not == "ambiguous: found 2 times"
    assert merged == "a  b\n\na b\n"


def test_edits_parse_from_json_text_and_garbage_without_raising():
    block = json.dumps([{"find": "A.", "replace": "B.", "reason": "why"}, "junk", {"replace": "no find"}])
    assert parse_edits(f"comments\n<edits>\n{block}\n</edits>") == (
        [{"find": "A.", "replace": "B.", "reason": "why"}],
        "json",
    )
    text = "<edits>\nFIND: Old words.\nREPLACE: New words.\nREASON: Shorter.\nFIND: x\nREPLACE: y\n</edits>"
    edits, tier = parse_edits(text)
    assert tier == "text" and edits[0] == {"find": "Old words.", "replace": "New words.", "reason": "Shorter."}
    assert edits[1]["find"] == "x" and edits[1]["replace"] == "y"
    assert parse_edits("<edits>{{{ not json") == ([], "none")
    assert parse_edits("no block at all") == ([], "none")
    flags, tier = parse_flags('<flags>[{"kind": "Contradiction", "note": "n"}, {"type": "uncited claim"}]</flags>')
    assert tier == "json" and [f["kind"] for f in flags] == ["inconsistency", "unsupported"]


def test_outline_sections_parse_from_json_or_numbered_lines():
    sections, tier = parse_sections(
        '<sections>[{"title": "Intro", "goal": "Hook", "sources": [1, "2", "x"]}]</sections>'
    )
    assert tier == "json" and sections == [{"title": "Intro", "goal": "Hook", "sources": [1, 2]}]
    sections, tier = parse_sections("1. Intro: set the scene\n2. Body - the case\n")
    assert tier == "text" and [s["title"] for s in sections] == ["Intro", "Body"]
    assert citations_in("See [1], [2, 3] and [2]; not [x] or [1000].") == [1, 2, 3]


# --- the policy -----------------------------------------------------------------------------------


def pipeline_session(owner, *, max_rounds=2, **config):
    session = team_session(
        owner,
        Flow.PIPELINE,
        [("Researcher", "researcher"), ("Planner", "planner"), ("Builder", "builder"), ("Reviewer", "reviewer")],
        max_rounds=max_rounds,
        flow_config=config,
    )
    services.add_references(session=session, user=owner, items=[("Notes", NOTES, "notes.md")])
    session.brief = "Why cities need trees: shade and storm water."
    session.save(update_fields=["brief"])
    return session


def complete(session, round_number, slot, recipe, *, score=None, result=None, text="done"):
    agent = session.agents.get(
        role={"research": "researcher", "outline": "planner", "build": "builder"}.get(slot, "reviewer")
    )
    return Turn.objects.create(
        session=session,
        round=round_number,
        agent=agent,
        agent_name=agent.name,
        slot=slot,
        recipe=recipe,
        status=Turn.TurnStatus.COMPLETED,
        overall_score=score,
        result=result or {},
        output_text=text,
    )


def test_the_policy_walks_research_plan_build_review_from_the_database(owner):
    session = pipeline_session(owner)
    policy = get_policy(Flow.PIPELINE)

    step = policy.next_step(session)
    assert isinstance(step, Step) and step.round == 1
    (call,) = step.calls
    assert (call.slot, call.recipe, call.output) == ("research", Recipe.RESEARCH, Output.NOTES)
    passages = Passage.objects.filter(pk__in=call.passages)
    assert call.passages and all(p.session_id == session.pk for p in passages)
    # The retriever ranked the passages the brief is about first; the unrelated one is not read.
    assert {p.heading for p in passages} == {"Shade", "Storm water"}

    research = complete(session, 1, "research", Recipe.RESEARCH)
    (call,) = policy.next_step(session).calls
    assert (call.slot, call.inputs) == ("outline", (research.pk,))

    outline = complete(session, 1, "outline", Recipe.OUTLINE)
    (call,) = policy.next_step(session).calls
    assert (call.slot, call.output, call.inputs) == ("build", Output.DOCUMENT, (research.pk, outline.pk))

    build = complete(session, 1, "build", Recipe.BUILD)
    (call,) = policy.next_step(session).calls
    assert (call.slot, call.output, call.inputs) == ("review", Output.DOCUMENT, (build.pk, research.pk))

    # Under the threshold (7 by default): build again, reading the review; research and plan are not repeated.
    review = complete(session, 1, "review", Recipe.REVIEW, score=5.5)
    step = policy.next_step(session)
    (call,) = step.calls
    assert step.round == 2 and call.slot == "build" and call.inputs == (research.pk, outline.pk, review.pk)

    build2 = complete(session, 2, "build", Recipe.BUILD)
    (call,) = policy.next_step(session).calls
    assert call.slot == "review" and call.inputs == (build2.pk, research.pk)
    complete(session, 2, "review", Recipe.REVIEW, score=6.0, result={"applied": 1, "edits": [{}, {}]})
    decision = policy.next_step(session)
    assert isinstance(decision, Finished) and decision.reason == StopReason.MAX_ROUNDS
    assert "6.0, under 7" in decision.detail and "1 of 2 proposed edits applied" in decision.detail


def test_a_good_review_ends_it_and_no_threshold_means_one_pass(owner):
    session = pipeline_session(owner, revise_below=8)
    for slot, recipe in (("research", Recipe.RESEARCH), ("outline", Recipe.OUTLINE), ("build", Recipe.BUILD)):
        complete(session, 1, slot, recipe)
    complete(session, 1, "review", Recipe.REVIEW, score=8.0)
    decision = get_policy(Flow.PIPELINE).next_step(session)
    assert decision.reason == StopReason.SCORE_THRESHOLD and "8.0 (at least 8)" in decision.detail

    session.flow_config = {"revise_below": None}
    decision = get_policy(Flow.PIPELINE).next_step(session)
    assert decision.reason == StopReason.PIPELINE_DONE


def test_a_stage_interrupted_mid_stream_is_planned_again_with_the_same_passages(owner):
    session = pipeline_session(owner)
    first = get_policy(Flow.PIPELINE).next_step(session).calls[0]
    agent = session.agents.get(role="researcher")
    Turn.objects.create(
        session=session, round=1, agent=agent, slot="research", recipe=Recipe.RESEARCH, status="incomplete"
    )
    again = get_policy(Flow.PIPELINE).next_step(session).calls[0]
    assert again == first


def test_the_team_and_settings_are_validated_with_actionable_messages(owner):
    session = pipeline_session(owner)
    session.agents.filter(role="planner").update(role="editor")
    agents = list(session.agents.all())
    problems = get_policy(Flow.PIPELINE).validate(session, agents)
    assert any("needs a planner" in p for p in problems)
    assert any("“editor” has no part in this flow" in p for p in problems)
    decision = get_policy(Flow.PIPELINE).next_step(session)
    assert isinstance(decision, Finished) and decision.reason == StopReason.ERROR

    for bad, message in [
        ({"tone": "snarky"}, "Tone must be one of"),
        ({"length_words": 5}, "Length must be"),
        ({"passages": 0}, "Passages to research"),
        ({"revise_below": 11}, "at most 10"),
        ({"format": "poem"}, "Format must be one of"),
        ({"stop_when_no_high_issues": True}, "Unknown pipeline setting"),
        ([1, 2], "must be an object"),
    ]:
        with pytest.raises(ConfigError, match=message):
            clean_config(bad)
    assert clean_config({"revise_below": None})["revise_below"] is None


def test_research_falls_back_to_the_opening_passages_when_nothing_matches(owner):
    session = pipeline_session(owner)
    session.title, session.brief = "Über", "Schreibe über Bäume."
    ids = research_passages(session, 2)
    assert len(ids) == 2 and all(Passage.objects.filter(pk=i, session=session, ordinal=1).exists() for i in ids[:1])


# --- parsing the stages' replies -----------------------------------------------------------------


def test_research_citations_point_at_real_passages_and_unknown_numbers_are_reported(owner):
    session = pipeline_session(owner)
    passages = tuple(Passage.objects.filter(session=session).order_by("ordinal").values_list("pk", flat=True))
    reply = (
        "## Summary\nTrees help.\n\n## Findings\n- Trees cool pavements [1].\n- Roots slow water [2, 3].\n"
        '- Owls vote [9].\n\n## Gaps\n- Costs.\n\n<evaluation>{"overall": 8}</evaluation>'
    )
    document, evaluation, result = parse_result(Recipe.RESEARCH, reply, [], (), passages)
    assert document == "" and evaluation.overall == 8
    assert [s["passage_id"] for s in result["sources"]] == list(passages)
    for source in result["sources"]:
        passage = Passage.objects.get(pk=source["passage_id"])
        assert passage.ordinal == source["ordinal"] and passage.reference.title == source["title"]
    assert result["cited"] == [1, 2, 3] and result["unknown_citations"] == [9]
    assert [f["citations"] for f in result["findings"]] == [[1], [2, 3], [9]]
    assert result["gaps"] == ["Costs."]


def test_the_review_reply_becomes_the_merged_draft_with_a_report_of_every_edit(owner):
    session = pipeline_session(owner)
    research = complete(session, 1, "research", Recipe.RESEARCH, result={"sources": [{"n": 1}, {"n": 2}]})
    build = complete(session, 1, "build", Recipe.BUILD, text=DRAFT + '\n<evaluation>{"overall": 7}</evaluation>')
    edits = [
        {"find": "Rain drains slower.", "replace": "Rain drains slower [2].", "reason": "Cite."},
        {"find": "Trees cool streets.", "replace": "x", "reason": "Ambiguous."},
        {"find": "Not there.", "replace": "y", "reason": "Missing."},
    ]
    reply = (
        '## Comments\nDecent.\n\n<flags>[{"kind": "unsupported", "passage": "Rain drains slower.", '
        '"note": "No source."}]</flags>\n\n<edits>' + json.dumps(edits) + "</edits>\n\n"
        '<evaluation>{"scores": {"Clarity": 6}}</evaluation>'
    )
    merged, evaluation, result = parse_result(Recipe.REVIEW, reply, [("Clarity", 1.0)], (build.pk, research.pk))
    assert evaluation.scores == {"Clarity": 6.0}
    assert merged == DRAFT.strip().replace("Rain drains slower.", "Rain drains slower [2].")
    assert (result["applied"], result["not_applied"]) == (1, 2)
    assert [e["why_not"] for e in result["edits"]] == ["", "ambiguous: found 2 times", "not found"]
    assert result["flags"][0]["kind"] == "unsupported" and result["comments"].startswith("## Comments")
    assert result["cited"] == [2] and result["tier"] == {"edits": "json", "flags": "json"}
    assert ReferenceDocument.objects.filter(session=session).count() == 1
