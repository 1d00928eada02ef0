"""Each flow policy over database states, with no I/O: every phase, partial failure, crash between phases."""

from __future__ import annotations

import pytest

from orchestration.flows import Finished, Output, Recipe, Step, get_policy
from orchestration.flows.roundtable import ConfigError, clean_config
from orchestration.models import DocumentVersion, Flow, StopReason, Turn
from tests.orchestration.flow_helpers import editorial_session, roundtable_session, team_session

pytestmark = pytest.mark.django_db


def agents(session):
    return {a.name: a for a in session.agents.all()}


def turn(session, round_number, agent, slot, status=Turn.TurnStatus.COMPLETED, result=None, attempt=1):
    return Turn.objects.create(
        session=session,
        round=round_number,
        agent=agent,
        agent_name=agent.name,
        slot=slot,
        status=status,
        result=result or {},
        attempt=attempt,
    )


def plan(session):
    session.refresh_from_db()
    return get_policy(session.flow).next_step(session)


def issues(*severities):
    return {"issues": [{"severity": s, "passage": "", "problem": f"{s} problem", "fix": ""} for s in severities]}


# --- Editorial ----------------------------------------------------------------------------------------------


def test_editorial_round_is_write_then_parallel_review_then_synthesis(owner):
    session = editorial_session(owner)
    a = agents(session)
    step = plan(session)
    assert isinstance(step, Step) and step.round == 1 and step.phase == "writing"
    assert [(c.agent_id, c.slot, c.recipe, c.output) for c in step.calls] == [
        (a["Writer"].pk, "write", Recipe.REVISE, Output.DOCUMENT)
    ]

    write = turn(session, 1, a["Writer"], "write")
    step = plan(session)
    assert step.phase == "reviewing" and step.quorum == 1
    assert [c.agent_id for c in step.calls] == [a["Structure"].pk, a["Line"].pk, a["Style"].pk]
    assert all(c.recipe == Recipe.CRITIQUE and c.output == Output.NOTES and c.inputs == (write.pk,) for c in step.calls)

    reviews = [turn(session, 1, a[name], f"review:{a[name].pk}") for name in ("Structure", "Line", "Style")]
    step = plan(session)
    assert step.phase == "synthesizing"
    (call,) = step.calls
    assert call.agent_id == a["Synth"].pk and call.recipe == Recipe.SYNTHESIZE and call.output == Output.DOCUMENT
    assert call.inputs == tuple(r.pk for r in reviews)

    turn(session, 1, a["Synth"], "synthesize")
    step = plan(session)
    assert step.round == 2 and step.calls[0].slot == "write"


def test_editorial_crash_between_reviews_replans_only_the_missing_editors(owner):
    session = editorial_session(owner)
    a = agents(session)
    turn(session, 1, a["Writer"], "write")
    turn(session, 1, a["Line"], f"review:{a['Line'].pk}")
    # The crash left Style's call streaming; the executor will mark it incomplete and plan it again.
    turn(session, 1, a["Style"], f"review:{a['Style'].pk}", status=Turn.TurnStatus.STREAMING)
    step = plan(session)
    assert [c.agent_id for c in step.calls] == [a["Structure"].pk, a["Style"].pk]
    assert step.quorum == 0  # one editor already succeeded: the round can go on whatever happens


def test_editorial_goes_on_without_an_editor_that_gave_up(owner):
    session = editorial_session(owner)
    a = agents(session)
    turn(session, 1, a["Writer"], "write")
    turn(
        session,
        1,
        a["Structure"],
        f"review:{a['Structure'].pk}",
        status=Turn.TurnStatus.FAILED,
        result={"given_up": True},
    )
    line = turn(session, 1, a["Line"], f"review:{a['Line'].pk}")
    style = turn(session, 1, a["Style"], f"review:{a['Style'].pk}")
    step = plan(session)
    assert step.phase == "synthesizing" and step.calls[0].inputs == (line.pk, style.pk)


def test_editorial_fails_when_no_editor_succeeded(owner):
    session = editorial_session(owner)
    a = agents(session)
    turn(session, 1, a["Writer"], "write")
    for name in ("Structure", "Line", "Style"):
        turn(session, 1, a[name], f"review:{a[name].pk}", status=Turn.TurnStatus.FAILED, result={"given_up": True})
    decision = plan(session)
    assert isinstance(decision, Finished) and decision.reason == StopReason.ERROR
    assert "No editor" in decision.detail


def test_editorial_never_replans_a_finished_call_and_stops_at_max_rounds(owner):
    session = editorial_session(owner, max_rounds=1)
    a = agents(session)
    turn(session, 1, a["Writer"], "write", status=Turn.TurnStatus.FAILED, attempt=1)
    turn(session, 1, a["Writer"], "write", attempt=2)
    for name in ("Structure", "Line", "Style"):
        turn(session, 1, a[name], f"review:{a[name].pk}")
    turn(session, 1, a["Synth"], "synthesize")
    decision = plan(session)
    assert isinstance(decision, Finished) and decision.reason == StopReason.MAX_ROUNDS


def test_editorial_validation_explains_missing_and_extra_roles(owner):
    session = team_session(owner, Flow.EDITORIAL, [("A", "writer"), ("B", "writer"), ("C", "critic")])
    problems = get_policy(Flow.EDITORIAL).validate(session, list(session.agents.all()))
    text = " ".join(problems)
    assert "needs an editor" in text and "needs a synthesizer" in text
    assert "only one writer" in text and "A, B" in text
    assert "“critic” has no part in this flow" in text


# --- Roundtable ----------------------------------------------------------------------------------------------


def test_roundtable_drafts_first_when_there_is_no_document(owner):
    session = roundtable_session(owner, document="")
    a = agents(session)
    step = plan(session)
    assert step.phase == "drafting" and step.calls[0].agent_id == a["Moderator"].pk
    turn(session, 1, a["Moderator"], "draft")
    session.document = "# Draft"
    session.save()
    assert plan(session).phase == "reviewing"


def test_roundtable_reviews_in_parallel_then_moderates_with_every_review(owner):
    session = roundtable_session(owner)
    a = agents(session)
    step = plan(session)
    assert step.phase == "reviewing" and len(step.calls) == 3 and step.quorum == 1
    reviews = [
        turn(session, 1, a[n], f"review:{a[n].pk}", result=issues("high", "low"))
        for n in ("Product", "Engineering", "Risk")
    ]
    step = plan(session)
    assert step.phase == "moderating" and step.calls[0].inputs == tuple(r.pk for r in reviews)
    assert step.calls[0].recipe == Recipe.MODERATE


def _complete_round(session, round_number, severities, change_ratio):
    a = agents(session)
    for n in ("Product", "Engineering", "Risk"):
        turn(session, round_number, a[n], f"review:{a[n].pk}", result=issues(*severities))
    moderate = turn(session, round_number, a["Moderator"], "moderate")
    number = DocumentVersion.objects.filter(session=session).count() + 1
    if change_ratio is not None:
        DocumentVersion.objects.create(
            session=session, number=number, content=f"v{number}", turn=moderate, change_ratio=change_ratio
        )


def test_roundtable_stops_when_no_high_severity_issues_are_left(owner):
    session = roundtable_session(owner, max_rounds=5)
    _complete_round(session, 1, ["high", "medium"], 0.4)
    assert plan(session).round == 2
    _complete_round(session, 2, ["medium", "low"], 0.3)
    decision = plan(session)
    assert isinstance(decision, Finished) and decision.reason == StopReason.NO_HIGH_ISSUES
    assert "no high-severity issues left" in decision.detail and "round 2" in decision.detail


def test_roundtable_stops_when_the_document_changed_less_than_the_threshold(owner):
    session = roundtable_session(owner, max_rounds=5, flow_config={"stop_below_change_percent": 10})
    _complete_round(session, 1, ["high"], 0.5)
    assert plan(session).round == 2
    _complete_round(session, 2, ["high"], 0.08)
    decision = plan(session)
    assert (
        decision.reason == StopReason.CONVERGED and "less than 10 %" in decision.detail and "8.0 %" in decision.detail
    )


def test_roundtable_with_no_change_at_all_counts_as_zero_percent(owner):
    session = roundtable_session(owner, max_rounds=5)
    _complete_round(session, 1, ["high"], None)  # the moderator returned the same document: no version
    assert plan(session).reason == StopReason.CONVERGED


def test_roundtable_rules_can_be_turned_off_leaving_max_iterations(owner):
    config = {"stop_when_no_high_issues": False, "stop_below_change_percent": None}
    session = roundtable_session(owner, max_rounds=2, flow_config=config)
    _complete_round(session, 1, ["low"], 0.0)
    assert plan(session).round == 2
    _complete_round(session, 2, [], 0.0)
    decision = plan(session)
    assert decision.reason == StopReason.MAX_ROUNDS and "Max iterations" in decision.detail


def test_roundtable_partial_failure_and_total_failure(owner):
    session = roundtable_session(owner)
    a = agents(session)
    turn(
        session, 1, a["Product"], f"review:{a['Product'].pk}", status=Turn.TurnStatus.FAILED, result={"given_up": True}
    )
    turn(
        session,
        1,
        a["Engineering"],
        f"review:{a['Engineering'].pk}",
        status=Turn.TurnStatus.FAILED,
        result={"given_up": True},
    )
    risk = turn(session, 1, a["Risk"], f"review:{a['Risk'].pk}", result=issues("high"))
    assert plan(session).calls[0].inputs == (risk.pk,)
    risk.delete()
    turn(session, 1, a["Risk"], f"review:{a['Risk'].pk}", status=Turn.TurnStatus.FAILED, result={"given_up": True})
    assert plan(session).reason == StopReason.ERROR


@pytest.mark.parametrize(
    "raw, message",
    [
        ([], "must be an object"),
        ({"stop_below_change_percent": "five"}, "number of percent"),
        ({"stop_below_change_percent": 0}, "more than 0"),
        ({"stop_below_change_percent": 150}, "at most 100"),
        ({"stop_when_no_high_issues": "yes"}, "on or off"),
        ({"max_rounds": 3}, "Unknown roundtable setting"),
    ],
)
def test_roundtable_config_is_validated_with_clear_messages(raw, message):
    with pytest.raises(ConfigError, match=message):
        clean_config(raw)


def test_roundtable_config_defaults():
    assert clean_config({}) == {"stop_when_no_high_issues": True, "stop_below_change_percent": 5.0}


def test_roundtable_invalid_config_blocks_the_start(owner):
    session = roundtable_session(owner, flow_config={"stop_below_change_percent": -1})
    problems = get_policy(Flow.ROUNDTABLE).validate(session, list(session.agents.all()))
    assert any("more than 0" in p for p in problems)
