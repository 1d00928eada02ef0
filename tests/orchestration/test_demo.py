"""The offline demo provider is an honest simulation: it answers the prompt it is given.

Requests are built by the real prompt builder (orchestration.prompts), so the demo reads exactly what a
language model would; the engine tests at the end run it through the real engine and database.
"""

from __future__ import annotations

import json
import re

import pytest

from orchestration.evaluation import parse_reply
from orchestration.prompts import PromptInputs, build_prompt
from orchestration.providers import DEMO_LABEL, ModelRequest, StreamEnd, TextDelta, get_adapter
from orchestration.providers.demo import demo_reply

BRIEF = (
    "Write a short essay (about 600 words) arguing whether cities should replace car lanes with "
    "protected bike lanes. Use clear sections and end with a recommendation."
)
REFERENCE = (
    "Harbour Street study (sample)",
    "This note is sample material. On Harbour Street, cyclist injuries fell by a third after protected bike "
    "lanes replaced one car lane. Delivery drivers reported longer loading times.",
)
WRITER = ("Academic writer", "writer", ["Clarity", "Argument strength", "Structure"])
EDITOR = ("Critical editor", "editor", ["Clarity", "Argument strength", "Evidence", "Structure"])
CRITIC = ("Sceptical reviewer", "critic", ["Argument strength", "Evidence"])


def request_for(
    agent,
    *,
    document: str = "",
    feedback=(),
    note: str = "",
    round_number: int = 1,
    brief: str = BRIEF,
    references=(REFERENCE,),
    **metadata,
) -> ModelRequest:
    name, role, criteria = agent
    prompt = build_prompt(
        PromptInputs(
            role_prompt=f"You are the {role}.",
            agent_name=name,
            role=role,
            criteria=[(c, "", 1.0) for c in criteria],
            brief=brief,
            references=list(references),
            document=document,
            feedback=list(feedback),
            human_note=note,
            round_number=round_number,
            max_rounds=6,
            context_window=200_000,
            max_output_tokens=2048,
        )
    )
    meta = {"round": round_number, "agent_name": name, "role": role, "criteria": criteria, "session_id": 7}
    meta.update(metadata)
    return ModelRequest(provider="demo", model_id="demo-writer", system=prompt.system, user=prompt.user, metadata=meta)


def reply(agent, **kwargs):
    text = demo_reply(request_for(agent, **kwargs))
    return (text, *parse_reply(text, [(c, 1.0) for c in agent[2]]))


def quotes(text: str) -> list[str]:
    # A long passage is quoted by its start and an ellipsis (the parser may normalise "…" to "...").
    return [re.sub(r"\s*(?:…|\.\.\.)$", "", q) for q in re.findall(r"“(.+?)”", text)]


def run_team(team, *, rounds: int, **kwargs):
    """Sequential turns through the demo, feeding each agent the others' latest feedback like the engine."""
    document, latest, log = kwargs.pop("document", ""), {}, []
    for round_number in range(1, rounds + 1):
        for agent in team:
            feedback = [(n, f) for n, f in latest.items() if n != agent[0] and f]
            _, doc, evaluation = reply(agent, document=document, feedback=feedback, round_number=round_number, **kwargs)
            log.append((round_number, agent[0], document, doc, evaluation))
            document, latest[agent[0]] = doc, evaluation.feedback
    return log


def test_demo_is_labelled_as_not_a_language_model():
    adapter = get_adapter("demo")
    assert DEMO_LABEL == "Demo (offline, not a language model)"
    assert adapter.display_name == DEMO_LABEL


def test_the_writer_drafts_around_the_briefs_topic_and_quotes_the_references():
    text, document, evaluation = reply(WRITER)

    assert document.startswith("# Should cities replace car lanes with protected bike lanes?\n")
    assert "Write a short essay" not in document  # the instruction is not pasted in as the topic
    assert "protected bike lanes" in document and "This draft argues that cities should replace" in document
    # The reference's most relevant sentence is quoted word for word, with its title.
    quoted = "“On Harbour Street, cyclist injuries fell by a third after protected bike lanes replaced one car lane.”"
    assert quoted in document
    assert "Harbour Street study (sample)" in document
    assert evaluation.tier == "json" and evaluation.scores
    assert demo_reply(request_for(WRITER)) == text  # deterministic

    other = reply(WRITER, brief="Tidal energy in small harbours")[1]
    assert other.startswith("# Tidal energy in small harbours\n")
    assert "tidal energy in small harbours deserves support" in other


def test_without_references_the_draft_says_nothing_is_quoted_and_a_critic_says_so():
    _, document, _ = reply(WRITER, references=())
    assert "“" not in document
    _, _, critique = reply(CRITIC, document=document, references=())
    assert "No reference documents were given" in critique.feedback


def test_editor_and_critic_critique_differently_and_quote_real_passages():
    _, draft, _ = reply(WRITER)
    _, edited, editor_eval = reply(EDITOR, document=draft, feedback=[("Academic writer", "First draft.")])
    _, criticised, critic_eval = reply(CRITIC, document=draft)

    # The editor fixes obvious wording itself: its text is not the writer's text.
    assert edited != draft
    assert "very often" in draft and "very often" not in edited
    assert "In order to" in draft and "In order to" not in edited
    # The critic reviews without rewriting.
    assert criticised == draft
    assert editor_eval.feedback != critic_eval.feedback
    # Every issue names a severity and quotes a passage that is really in the document it reviewed.
    for document, feedback in ((edited, editor_eval.feedback), (draft, critic_eval.feedback)):
        issues = [line for line in feedback.splitlines() if re.search(r"\[(high|medium|low)\]", line)]
        assert issues
        for line in issues:
            for quote in quotes(line.split(" — ")[0]):
                assert quote in document, f"{quote!r} is not in the reviewed document"
    assert "sweeping claim" in critic_eval.feedback and "sweeping claim" not in editor_eval.feedback
    assert "[high]" in editor_eval.feedback  # the unsupported claim


def test_the_writer_applies_earlier_feedback_and_says_what_it_applied():
    _, draft, _ = reply(WRITER)
    _, edited, editor_eval = reply(EDITOR, document=draft)
    feedback = [("Critical editor", editor_eval.feedback)]
    _, revised, writer_eval = reply(WRITER, document=edited, feedback=feedback, round_number=2)

    # The most severe item first (the unsupported claim), one item a turn so progress shows round by round.
    assert revised.count("On Harbour Street, cyclist injuries fell by a third") == 2
    assert "## Objections" not in revised
    assert "added evidence from “Harbour Street study (sample)” (Critical editor, high)" in writer_eval.feedback
    # What the editor did not flag stays as it was.
    assert revised.startswith(edited.split("## The case")[0])


def test_a_run_improves_round_by_round_then_settles():
    log = run_team([WRITER, EDITOR], rounds=8)
    editor_scores = [evaluation.overall for _, name, _, _, evaluation in log if name == "Critical editor"]
    writer_tiers = [evaluation.tier for _, name, _, _, evaluation in log if name == "Academic writer"]

    assert editor_scores == sorted(editor_scores) and editor_scores[0] < 8.0 and editor_scores[-1] >= 9.0
    assert writer_tiers[:3] == ["json", "natural", "fallback"]  # every parser tier is exercised offline
    final = log[-1][3]
    assert "## Recommendation" in final and "## Objections" in final
    assert log[-1][3] == log[-2][3] == log[-3][3]  # nothing left to fix: convergence can trigger
    assert "No problems left" in log[-1][4].feedback


def test_a_human_edit_and_a_note_survive_the_next_turn():
    _, draft, _ = reply(WRITER)
    human = "A paragraph the owner wrote by hand, about the school run on Mill Road."
    edited = draft.replace("## Conclusion", human + "\n\n## Conclusion")
    _, revised, evaluation = reply(WRITER, document=edited, note="Add a section about parking.", round_number=2)

    assert human in revised
    assert "## Parking" in revised
    assert "added a section on parking, as your note asked" in evaluation.feedback
    _, _, unclear = reply(WRITER, document=edited, note="Make it sing.", round_number=2)
    assert "the demo only follows notes like" in unclear.feedback


def test_a_starting_document_is_revised_not_replaced():
    start = "# My notes on bike lanes\n\nBike lanes are always good for every street in every city we know of today."
    _, revised, _ = reply(WRITER, document=start)
    assert revised.startswith("# My notes on bike lanes")
    assert "Bike lanes are" in revised


def test_the_critique_recipe_returns_structured_issues_and_no_document():
    _, draft, _ = reply(WRITER)
    text = demo_reply(request_for(CRITIC, document=draft, recipe="critique"))
    issues = json.loads(re.search(r"<issues>\n(.*?)\n</issues>", text, re.S).group(1))

    assert "# Should cities" not in text  # a critique does not return the document
    assert {issue["severity"] for issue in issues} <= {"high", "medium", "low"}
    assert {"high", "medium"} <= {issue["severity"] for issue in issues}
    for issue in issues:
        assert issue["problem"] and issue["fix"]
        if issue["passage"]:
            assert issue["passage"] in draft  # an exact quote the page can find
    _, evaluation = parse_reply(text, [(c, 1.0) for c in CRITIC[2]])
    assert set(evaluation.scores) == set(CRITIC[2])
    # Specialists differ: an evidence critic leads with evidence, a style critic with clarity.
    evidence = demo_reply(request_for(("Evidence critic", "critic", ["Evidence"]), document=draft, recipe="critique"))
    style = demo_reply(request_for(("Style critic", "critic", ["Clarity"]), document=draft, recipe="critique"))
    first = [json.loads(re.search(r"<issues>\n(.*?)\n</issues>", t, re.S).group(1))[0] for t in (evidence, style)]
    assert "support" in first[0]["problem"] and "sentence runs" in first[1]["problem"]


def test_synthesis_and_moderation_apply_numbered_issues_and_say_what_they_did():
    from orchestration.flows.recipes import number_issues, review_material

    _, draft, _ = reply(WRITER)
    critique = demo_reply(request_for(CRITIC, document=draft, recipe="critique"))
    issues = json.loads(re.search(r"<issues>\n(.*?)\n</issues>", critique, re.S).group(1))
    numbered = number_issues([(1, "Sceptical reviewer", issues)], "I")
    material = [("Sceptical reviewer", review_material("Comments.", numbered))]
    text = demo_reply(
        request_for(("Moderator", "moderator", ["Clarity"]), document=draft, feedback=material, recipe="moderate")
    )
    resolutions = json.loads(re.search(r"<resolutions>\n(.*?)\n</resolutions>", text, re.S).group(1))
    document, _ = parse_reply(text, [("Clarity", 1.0)])

    assert [r["id"] for r in resolutions] == [n["id"] for n in numbered]
    assert {r["action"] for r in resolutions} == {"fixed"}
    assert "## Objections" in document and "## Recommendation" in document
    # Once resolved, a critic finds no high-severity issue left (the roundtable can converge).
    again = demo_reply(request_for(CRITIC, document=document, recipe="critique", round_number=2))
    assert "high" not in {
        i["severity"] for i in json.loads(re.search(r"<issues>\n(.*?)\n</issues>", again, re.S).group(1))
    }

    editors = number_issues([(1, "Line editor", issues)], "E")
    text = demo_reply(
        request_for(
            ("Synthesizer", "synthesizer", ["Clarity"]),
            document=draft,
            feedback=[("Line editor", review_material("", editors))],
            recipe="synthesize",
        )
    )
    decisions = json.loads(re.search(r"<decisions>\n(.*?)\n</decisions>", text, re.S).group(1))
    assert [d["id"] for d in decisions] == [e["id"] for e in editors]
    assert all(d["decision"] in ("accepted", "rejected") and d["reason"] for d in decisions)


def test_plans_and_handoffs_are_json():
    _, draft, _ = reply(WRITER)
    from orchestration.flows.taskgraph import parse_plan

    plan = parse_plan(demo_reply(request_for(WRITER, recipe="plan")), max_tasks=8)
    assert plan["valid"], plan["errors"]
    assert [task["id"] for task in plan["tasks"]] == ["research", "context", "case", "objections", "conclusion"]
    assert plan["waves"] == [["research"], ["context", "case", "objections"], ["conclusion"]]
    route = demo_reply(request_for(WRITER, document=draft, recipe="route"))
    assert json.loads(re.search(r"```json\n(.*?)\n```", route, re.S).group(1))["handoff"] == "editor"


async def test_the_demo_streams_in_small_chunks_and_reports_usage(settings):
    settings.DEMO_TOKENS_PER_SECOND = 0
    events = [event async for event in get_adapter("demo").stream(request_for(WRITER))]
    chunks = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(chunks) > 20 and all(len(chunk.split()) <= 3 for chunk in chunks)
    assert isinstance(events[-1], StreamEnd)
    assert events[-1].usage.input_tokens > 0 and events[-1].usage.output_tokens > 0


def test_a_request_without_criteria_is_scored_on_quality():
    request = ModelRequest(provider="demo", model_id="d", system="", user="Brief: Urban beekeeping", metadata={})
    text = demo_reply(request)
    _, evaluation = parse_reply(text, [("Quality", 1.0)])
    assert set(evaluation.scores) == {"Quality"}
    assert text.startswith("# Urban beekeeping\n")


# --- through the real engine ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_engine_demo_run_quotes_references_applies_feedback_and_keeps_a_human_edit(owner, instant_demo, monkeypatch):
    from billing.services import grant_credits
    from orchestration import engine, services
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import Project, ReferenceDocument, Status, Turn, WritingSession
    from orchestration.presets import DEMO_BRIEF, SHIPPED_PRESETS, apply_preset, demo_model, seed_presets

    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda pk: None)
    grant_credits(user=owner, amount=10_000, key="test:demo", description="test")
    seed_catalogue()
    seed_presets()
    from orchestration.models import TeamPreset

    project = Project.objects.create(owner=owner, name="Demo")
    session = WritingSession.objects.create(project=project, title="Demo", brief=DEMO_BRIEF)
    preset = TeamPreset.objects.get(slug=SHIPPED_PRESETS[0]["slug"])
    apply_preset(session=session, preset=preset, default_model=demo_model())
    ReferenceDocument.objects.create(session=session, title=REFERENCE[0], content=REFERENCE[1])
    session.max_rounds = 1
    session.score_threshold = None
    session.save()

    services.start_session(session=session, user=owner)
    engine.drive(session.pk)
    session.refresh_from_db()
    writer_turn, editor_turn = Turn.objects.filter(session=session).order_by("pk")
    assert "“On Harbour Street, cyclist injuries fell by a third" in writer_turn.output_text
    assert editor_turn.output_text.split("<evaluation>")[0] != writer_turn.output_text.split("<evaluation>")[0]
    assert "[high]" in editor_turn.feedback

    # The owner edits the document by hand, then continues: the edit survives, the feedback is applied.
    human = "A paragraph the owner wrote by hand about the school run on Mill Road."
    services.continue_session(session=session, extra_rounds=1)
    services.pause_session(session=session)  # before the worker picks it up: no turn runs
    engine.drive(session.pk)
    session.refresh_from_db()
    assert session.status == Status.PAUSED
    services.apply_human_edit(session=session, user=owner, document=session.document + "\n\n" + human + "\n", note="")
    services.resume_session(session=session)
    engine.drive(session.pk)
    session.refresh_from_db()
    writer_again = Turn.objects.filter(session=session, round=2, agent_name="Academic writer").get()
    assert human in writer_again.output_text
    assert "(Critical editor, high)" in writer_again.feedback
    assert human in session.document
