"""The pipeline through the engine with the real SDKs (Anthropic and OpenAI) against the wire-level fake
LLM server: passages reach the researcher numbered, citations map to real passages, reviewer edits apply
or are reported, a low review score builds again, usage and cost are recorded per stage."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from billing.services import get_balance
from orchestration import services
from orchestration.models import DocumentVersion, Flow, Passage, Status, StopReason, Turn
from tests.orchestration.engine_helpers import priced_model
from tests.orchestration.flow_helpers import team_session
from tests.orchestration.test_engine import run_to_end, start

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = """# Shade

Street trees cool the pavement by several degrees in summer.

## Storm water

Roots and crowns slow storm water, so drains overflow less often.

## Parking

Parking meters were introduced in 1935.
"""

DRAFT_1 = "# Trees\n\nTrees cool streets [1]. Trees cool streets [1].\n\nDrains overflow less.\n\nEveryone agrees.\n"
DRAFT_2 = "# Trees\n\nTrees cool streets [1].\n\nRoots slow storm water, so drains overflow less [2].\n"


def stage_of(request) -> str:
    match = re.search(r"You are the (researcher|planner|builder|reviewer) of a pipeline", request.system_text)
    return match.group(1) if match else "?"


def replies():
    calls = {"build": 0, "review": 0}

    def reply(request) -> str:
        stage = stage_of(request)
        if stage == "researcher":
            return (
                "## Summary\nTrees cool and drain.\n\n## Findings\n- Trees cool pavements [1].\n"
                "- Roots slow storm water [2].\n- Owls vote [7].\n\n## Gaps\n- Costs.\n\n"
                '<evaluation>{"scores": {"Clarity": 8}, "feedback": "ok"}</evaluation>'
            )
        if stage == "planner":
            sections = [{"title": "Shade", "goal": "Cooling", "sources": [1]}, {"title": "Rain", "goal": "Drains"}]
            return (
                f"# Trees\n\n<sections>{json.dumps(sections)}</sections>\n\n"
                + '<evaluation>{"scores": {"Clarity": 8}}</evaluation>'
            )
        if stage == "builder":
            calls["build"] += 1
            draft = DRAFT_1 if calls["build"] == 1 else DRAFT_2
            return draft + '\n<evaluation>{"scores": {"Clarity": 7}}</evaluation>'
        calls["review"] += 1
        if calls["review"] == 1:
            edits = [
                {"find": "Drains overflow less.", "replace": "Drains overflow less often [2].", "reason": "Cite."},
                {"find": "Trees cool streets [1].", "replace": "Shade cools streets [1].", "reason": "Twice."},
                {"find": "Nobody disagrees.", "replace": "Few disagree.", "reason": "Not there."},
            ]
            flags = [{"kind": "unsupported", "passage": "Everyone agrees.", "note": "No source."}]
            score = 5
        else:
            edits, flags, score = [], [], 9
        return (
            f"## Comments\nRound {calls['review']}.\n\n<flags>{json.dumps(flags)}</flags>\n\n"
            f"<edits>{json.dumps(edits)}</edits>\n\n"
            f'<evaluation>{{"scores": {{"Clarity": {score}}}, "feedback": "see edits"}}</evaluation>'
        )

    return reply


def test_pipeline_runs_through_both_sdks_with_citations_merge_rebuild_and_usage_per_stage(
    providers, enqueued, rich_owner
):
    openai_model = priced_model("openai", "gpt-test", input_price_per_mtok=Decimal("1"))
    providers.reply(*[replies()] * 6)
    session = team_session(
        rich_owner,
        Flow.PIPELINE,
        [("Researcher", "researcher"), ("Planner", "planner"), ("Builder", "builder"), ("Reviewer", "reviewer")],
        max_rounds=3,
        models={"Planner": openai_model, "Reviewer": openai_model},
        flow_config={"revise_below": 7, "passages": 2},
    )
    session.brief = "Why cities need trees: shade and storm water."
    session.save(update_fields=["brief"])
    services.add_references(session=session, user=rich_owner, items=[("Notes", NOTES, "notes.md")])
    balance = get_balance(rich_owner)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED, session.stop_detail
    assert session.stop_reason == StopReason.SCORE_THRESHOLD

    requests = providers.generation_requests()
    assert [stage_of(r) for r in requests] == ["researcher", "planner", "builder", "reviewer", "builder", "reviewer"]
    research_prompt = requests[0].system_text
    # The two passages the brief is about, numbered; the unrelated one never reaches the model.
    assert "[1] Notes, passage" in research_prompt and "[2] Notes, passage" in research_prompt
    assert "Parking meters" not in research_prompt
    assert "the builder writes it after the research and the plan" in requests[0].user_text
    assert "write the first draft" not in requests[0].user_text + requests[1].user_text
    assert "format: article; tone: neutral; length: about 800 words" in requests[2].user_text
    # The rebuild reads the review: the edit that could not be applied and the flag.
    assert "Nobody disagrees." in requests[4].user_text and "[unsupported]" in requests[4].user_text

    turns = {(t.round, t.slot): t for t in Turn.objects.filter(session=session, status="completed")}
    research = turns[(1, "research")].result
    assert research["cited"] == [1, 2] and research["unknown_citations"] == [7]
    for source in research["sources"]:
        assert Passage.objects.filter(pk=source["passage_id"], session=session, ordinal=source["ordinal"]).exists()

    review = turns[(1, "review")]
    assert [e["why_not"] for e in review.result["edits"]] == ["", "ambiguous: found 2 times", "not found"]
    merged = DocumentVersion.objects.get(turn=review).content
    assert "Drains overflow less often [2]." in merged and merged.count("Trees cool streets [1].") == 2
    assert session.document == DRAFT_2.strip()  # round 2's review proposed nothing: the rebuild is final

    for turn in turns.values():  # usage and cost per stage, from the providers' own counts
        assert turn.input_tokens > 0 and turn.output_tokens > 0 and turn.credits > 0 and turn.provider_cost > 0
    assert session.credits_used == sum(t.credits for t in Turn.objects.filter(session=session))
    assert get_balance(rich_owner) == balance - session.credits_used
