"""The sequential flow policy and each termination condition on its own, over database states (no I/O).

The engine-level tests (tests/orchestration/test_engine.py, test_termination.py) run these through real
model calls; here each rule is pinned by the states it reads, so a regression names the rule that broke.
"""

from __future__ import annotations

import pytest

from orchestration.flows import Finished, Step, get_policy
from orchestration.models import DocumentVersion, Flow, StopReason, Turn
from orchestration.termination import (
    Convergence,
    CreditBudget,
    ScoreThreshold,
    check_after_turn,
    check_before_step,
    conditions_for,
)
from tests.orchestration.flow_helpers import team_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner):
    return team_session(owner, Flow.SEQUENTIAL, [("Writer", "writer"), ("Editor", "editor")], max_rounds=2)


def agents(session):
    return {a.name: a for a in session.agents.all()}


def turn(session, round_number, agent, *, status=Turn.TurnStatus.COMPLETED, score=None, document=None):
    made = Turn.objects.create(
        session=session,
        round=round_number,
        agent=agent,
        agent_name=agent.name,
        slot=f"turn:{agent.pk}",
        status=status,
        overall_score=score,
    )
    if document is not None:
        number = DocumentVersion.objects.filter(session=session).count() + 1
        DocumentVersion.objects.create(session=session, number=number, content=document, turn=made)
    return made


def plan(session):
    session.refresh_from_db()
    return get_policy(session.flow).next_step(session)


# --- Sequential policy ----------------------------------------------------------------------------------------


def test_sequential_starts_with_the_first_agent_in_round_one(session):
    step = plan(session)
    assert isinstance(step, Step)
    assert step.round == 1
    assert [call.agent_id for call in step.calls] == [agents(session)["Writer"].pk]


def test_sequential_takes_turns_in_order_and_wraps_into_the_next_round(session):
    team = agents(session)
    turn(session, 1, team["Writer"])
    assert [c.agent_id for c in plan(session).calls] == [team["Editor"].pk]
    turn(session, 1, team["Editor"])
    step = plan(session)
    assert step.round == 2
    assert [c.agent_id for c in step.calls] == [team["Writer"].pk]


def test_sequential_replans_a_turn_that_did_not_finish(session):
    team = agents(session)
    turn(session, 1, team["Writer"])
    turn(session, 1, team["Editor"], status=Turn.TurnStatus.FAILED)
    step = plan(session)
    assert (step.round, [c.agent_id for c in step.calls]) == (1, [team["Editor"].pk])


def test_an_agent_deactivated_after_its_turn_does_not_cost_the_next_agent_its_turn(session):
    team = agents(session)
    turn(session, 1, team["Writer"])
    turn(session, 1, team["Editor"])
    turn(session, 2, team["Writer"])
    team["Writer"].active = False
    team["Writer"].save(update_fields=["active"])
    step = plan(session)
    assert (step.round, [c.agent_id for c in step.calls]) == (2, [team["Editor"].pk])
    turn(session, 2, team["Editor"])
    assert isinstance(plan(session), Finished)


def test_a_deactivated_agent_is_skipped_in_the_next_round(session):
    team = agents(session)
    turn(session, 1, team["Writer"])
    turn(session, 1, team["Editor"])
    team["Writer"].active = False
    team["Writer"].save(update_fields=["active"])
    step = plan(session)
    assert (step.round, [c.agent_id for c in step.calls]) == (2, [team["Editor"].pk])


def test_sequential_finishes_with_max_rounds_after_the_last_round(session):
    team = agents(session)
    for round_number in (1, 2):
        turn(session, round_number, team["Writer"])
        turn(session, round_number, team["Editor"])
    finished = plan(session)
    assert isinstance(finished, Finished)
    assert finished.reason == StopReason.MAX_ROUNDS
    assert "2 rounds" in finished.detail


def test_sequential_with_no_active_agent_finishes_with_an_error_saying_so(session):
    session.agents.update(active=False)
    finished = plan(session)
    assert isinstance(finished, Finished)
    assert finished.reason == StopReason.ERROR
    assert "no active agents" in finished.detail


# --- Score threshold ------------------------------------------------------------------------------------------


def test_score_threshold_stops_at_or_above_the_threshold_and_says_who_and_when(session):
    team = agents(session)
    rule = ScoreThreshold(8.0, agent_id=None)
    assert rule.after_turn(session, turn(session, 1, team["Editor"], score=7.9)) is None
    stop = rule.after_turn(session, turn(session, 2, team["Editor"], score=8.0))
    assert stop.reason == StopReason.SCORE_THRESHOLD
    assert stop.detail == "Editor scored 8.0 (threshold 8) in round 2."


def test_score_threshold_for_one_agent_ignores_the_others(session):
    team = agents(session)
    rule = ScoreThreshold(8.0, agent_id=team["Editor"].pk)
    assert rule.after_turn(session, turn(session, 1, team["Writer"], score=9.5)) is None
    assert rule.after_turn(session, turn(session, 1, team["Editor"], score=9.5)) is not None


def test_score_threshold_ignores_unscored_turns_and_rounds_before_a_continue(session):
    team = agents(session)
    rule = ScoreThreshold(5.0, agent_id=None)
    assert rule.after_turn(session, turn(session, 1, team["Writer"], score=None)) is None
    session.continued_at_round = 1
    # A continued session does not stop on the score that ended its previous run.
    assert rule.after_turn(session, turn(session, 1, team["Editor"], score=9.0)) is None
    assert rule.after_turn(session, turn(session, 2, team["Editor"], score=9.0)) is not None


# --- Convergence ------------------------------------------------------------------------------------------------


def test_convergence_needs_two_rounds_to_compare(session):
    team = agents(session)
    turn(session, 1, team["Writer"], document="Trees cool streets.")
    assert Convergence(10).end_of_round(session, 1) is None


def test_convergence_stops_when_a_round_changed_less_than_the_percent(session):
    team = agents(session)
    text = "Trees cool streets. " * 40
    turn(session, 1, team["Writer"], document=text)
    turn(session, 2, team["Writer"], document=text + "More shade.")
    stop = Convergence(10).end_of_round(session, 2)
    assert stop.reason == StopReason.CONVERGED
    assert stop.detail.startswith("Round 2 changed ") and "below 10%" in stop.detail


def test_convergence_carries_on_when_the_round_rewrote_the_document(session):
    team = agents(session)
    turn(session, 1, team["Writer"], document="Trees cool streets and calm traffic.")
    turn(session, 2, team["Writer"], document="Parks lower heat; shade saves energy in summer.")
    assert Convergence(10).end_of_round(session, 2) is None


def test_convergence_counts_a_round_that_returned_the_document_unchanged_as_zero_percent(session):
    team = agents(session)
    turn(session, 1, team["Writer"], document="Trees cool streets.")
    turn(session, 2, team["Writer"])  # completed, recorded no version: the document did not change
    stop = Convergence(5).end_of_round(session, 2)
    assert stop.reason == StopReason.CONVERGED
    assert "0% change" in stop.detail


def test_convergence_says_nothing_about_a_round_with_no_completed_turn(session):
    team = agents(session)
    turn(session, 1, team["Writer"], document="Trees cool streets.")
    turn(session, 2, team["Writer"], status=Turn.TurnStatus.FAILED)
    assert Convergence(5).end_of_round(session, 2) is None


# --- Credit budget ------------------------------------------------------------------------------------------------


def test_credit_budget_stops_before_a_step_once_spent(session):
    rule = CreditBudget(100)
    session.credits_used = 99
    assert rule.before_step(session) is None
    session.credits_used = 100
    stop = rule.before_step(session)
    assert stop.reason == StopReason.BUDGET
    assert stop.detail == "Spent 100 of the 100-credit budget."


# --- Combining the conditions -------------------------------------------------------------------------------------


def test_conditions_come_from_the_session_settings_and_none_by_default(session):
    assert conditions_for(session) == []
    session.score_threshold = 8
    session.convergence_percent = 5
    session.credit_budget = 50
    kinds = [type(c) for c in conditions_for(session)]
    assert kinds == [ScoreThreshold, Convergence, CreditBudget]


def test_end_of_round_rules_run_only_when_the_round_is_complete(session):
    team = agents(session)
    session.convergence_percent = 50
    turn(session, 1, team["Writer"], document="Trees cool streets.")
    last = turn(session, 2, team["Writer"], document="Trees cool streets!")
    assert check_after_turn(session, last, round_complete=False) is None
    assert check_after_turn(session, last, round_complete=True).reason == StopReason.CONVERGED


def test_before_step_checks_only_the_budget(session):
    session.score_threshold = 1
    session.credit_budget = 10
    session.credits_used = 5
    assert check_before_step(session) is None
    session.credits_used = 10
    assert check_before_step(session).reason == StopReason.BUDGET
