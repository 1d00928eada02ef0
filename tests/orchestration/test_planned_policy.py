"""The planned flow's policy over database states (no I/O), its task graph rules and its router."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from orchestration.flows import Finished, Step, Waiting
from orchestration.flows.planned import ConfigError, PlannedFlow, clean_config
from orchestration.flows.taskgraph import critical_path, parse_plan
from orchestration.models import StopReason, Turn
from tests.orchestration.engine_helpers import on_pro_plan, priced_model
from tests.orchestration.flow_helpers import planned_session

pytestmark = pytest.mark.django_db

POLICY = PlannedFlow()
TASKS = [
    {"id": "a", "title": "A", "kind": "research", "instructions": "x", "depends_on": [], "expected_output": "y"},
    {"id": "b", "title": "B", "kind": "section", "instructions": "x", "depends_on": [], "expected_output": "y"},
    {"id": "c", "title": "C", "kind": "summary", "instructions": "x", "depends_on": ["a", "b"], "expected_output": "y"},
]


def turn(session, slot, *, status=Turn.TurnStatus.COMPLETED, result=None, model="claude-test", agent=None, text=""):
    agent = agent or session.agents.get(role="worker")
    attempt = Turn.objects.filter(session=session, round=1, agent=agent).count() + 1
    return Turn.objects.create(
        session=session, round=1, agent=agent, agent_name=agent.name, attempt=attempt, slot=slot, status=status,
        result=result or {}, model_used=model, output_text=text, finished_at=timezone.now(), latency_ms=1000,
    )  # fmt: skip


def plan_turn(session, tasks=TASKS, **extra):
    planner = session.agents.get(role="planner")
    result = {"tasks": tasks, "valid": True, "errors": [], "waves": [], **extra}
    return turn(session, "plan", result=result, agent=planner)


@pytest.fixture
def session(owner):
    on_pro_plan(owner)
    return planned_session(owner)


def slots(step) -> list[str]:
    return sorted(call.slot for call in step.calls)


def test_first_the_planner_plans_within_the_plan_limit(session):
    step = POLICY.next_step(session)
    assert isinstance(step, Step) and slots(step) == ["plan"]
    assert step.calls[0].context["max_tasks"] == 16 and "at most 16 tasks" in step.calls[0].task


def test_an_invalid_plan_gets_one_repair_call_carrying_its_errors_then_a_clear_failure(session):
    planner = session.agents.get(role="planner")
    turn(
        session, "plan", agent=planner, result={"tasks": [], "valid": False, "errors": ["Task “b” depends on itself."]}
    )
    step = POLICY.next_step(session)
    assert slots(step) == ["plan:repair"] and "Task “b” depends on itself." in step.calls[0].task
    turn(
        session, "plan:repair", agent=planner, result={"tasks": [], "valid": False, "errors": ["No task graph found."]}
    )
    end = POLICY.next_step(session)
    assert isinstance(end, Finished) and end.reason == StopReason.ERROR and "No task graph found." in end.detail


def test_with_approval_on_a_valid_plan_waits_for_the_user_then_runs_the_first_wave(session):
    session.flow_config = {"approve_plan": True}
    session.save()
    plan = plan_turn(session)
    assert isinstance(POLICY.next_step(session), Waiting)
    Turn.objects.filter(pk=plan.pk).update(result={**plan.result, "approved_at": "now"})
    step = POLICY.next_step(session)
    assert slots(step) == ["task:a", "task:b"] and step.quorum == 0  # c waits for both


def test_a_finished_task_is_verified_and_its_dependents_start_only_when_all_passed(session):
    plan_turn(session)
    verifier = session.agents.get(role="verifier")
    a = turn(session, "task:a", result={"checks_ok": True}, text="A result")
    turn(session, "verify:task:a", agent=verifier, result={"verdict": "pass"})
    b = turn(session, "task:b", result={"checks_ok": True})
    step = POLICY.next_step(session)
    assert slots(step) == ["verify:task:b"] and step.calls[0].inputs == (b.pk,)
    turn(session, "verify:task:b", agent=verifier, result={"verdict": "pass"})
    step = POLICY.next_step(session)
    assert slots(step) == ["task:c"]
    assert set(step.calls[0].inputs) == {a.pk, b.pk}  # only its dependencies' results


def test_a_try_failing_the_rule_checks_goes_straight_to_its_repair_on_the_same_model(session):
    plan_turn(session, tasks=TASKS[:1])
    failed = turn(session, "task:a", result={"checks_ok": False, "check_notes": ["The output is empty."]})
    step = POLICY.next_step(session)
    call = step.calls[0]
    assert slots(step) == ["repair:a#1"] and "The output is empty." in call.task and failed.pk in call.inputs
    assert call.context["journal"][0][1]["chosen"] == "claude-test"


def test_after_a_crash_only_the_missing_calls_are_planned_again(session):
    plan_turn(session)
    turn(session, "task:a", result={"checks_ok": True})
    turn(session, "task:b", status=Turn.TurnStatus.INCOMPLETE)  # the worker died mid-stream
    step = POLICY.next_step(session)
    assert slots(step) == ["task:b", "verify:task:a"]


def test_after_the_assembly_the_run_finishes_naming_what_is_missing(session):
    plan_turn(session, tasks=TASKS[:2])
    verifier = session.agents.get(role="verifier")
    turn(session, "task:a", result={"checks_ok": True})
    turn(session, "verify:task:a", agent=verifier, result={"verdict": "pass"})
    for slot in ("task:b", "repair:b#1"):
        turn(session, slot, result={"checks_ok": True})
        turn(session, f"verify:{slot}", agent=verifier, result={"verdict": "fail", "notes": "no"})
    step = POLICY.next_step(session)  # one worker model: no next-best try
    assert slots(step) == ["assemble"] and step.calls[0].context["missing"][0]["task"] == "b"
    turn(session, "assemble", agent=session.agents.get(role="assembler"))
    end = POLICY.next_step(session)
    assert end == Finished(StopReason.PLAN_DONE, "1 of 2 tasks done. Missing: b (failed).")


def test_the_team_and_settings_are_checked_in_words_the_user_can_act_on(session):
    agents = list(session.agents.all())
    assert POLICY.validate(session, agents) == []
    session.flow_config = {"max_repairs": 9}
    problems = POLICY.validate(session, [a for a in agents if a.role != "worker"])
    assert "The planned flow needs a worker: set an agent's role to “worker”." in problems
    assert "Max repairs must be between 0 and 3." in problems
    with pytest.raises(ConfigError):
        clean_config({"min_words": "many"})


@pytest.mark.parametrize(
    ("tasks", "error"),
    [
        ([], "The plan has no tasks"),
        ([{**TASKS[0], "depends_on": ["zz"]}], "depends on “zz”, which is not a task of the plan"),
        ([{**TASKS[0], "depends_on": ["a"]}], "Task “a” depends on itself."),
        ([TASKS[0], TASKS[0]], "Two tasks have the id “a”"),
        ([{**TASKS[0], "depends_on": ["c"]}, TASKS[1], TASKS[2]], "cycle: a → c → a"),
        ([{**TASKS[0], "kind": "poem"}], "kind must be one of research, outline"),
        ([{**TASKS[0], "id": "no spaces"}], "ids are 1-16 letters"),
        ([{**TASKS[0], "expected_output": ""}], "field “expected_output”"),
    ],
)
def test_graph_validation_names_the_problem(tasks, error):
    import json

    result = parse_plan("<plan>" + json.dumps({"tasks": tasks}) + "</plan>", max_tasks=5)
    assert not result["valid"] and any(error in e for e in result["errors"]), result["errors"]


def test_oversized_graphs_and_the_critical_path():
    import json

    many = [{**TASKS[0], "id": f"t{i}"} for i in range(6)]
    assert "at most 5 are allowed" in parse_plan(json.dumps({"tasks": many}), max_tasks=5)["errors"][0]
    ok = parse_plan("```json\n" + json.dumps({"tasks": TASKS}) + "\n```", max_tasks=5)
    assert ok["valid"] and ok["waves"] == [["a", "b"], ["c"]]
    assert critical_path(TASKS, {"a": 2.0, "b": 5.0, "c": 1.0}) == (6.0, ["b", "c"])


# --- The router --------------------------------------------------------------------------------------


def history(model_id: str, n: int, *, status=Turn.TurnStatus.COMPLETED, latency_ms=1000, session):
    agent = session.agents.get(role="planner")
    base = Turn.objects.filter(session=session, agent=agent).count()
    for i in range(n):
        Turn.objects.create(
            session=session, round=50, agent=agent, agent_name=agent.name, attempt=base + i + 1, status=status,
            model_used=model_id, latency_ms=latency_ms, output_tokens=1000, provider_cost=Decimal("0.01"),
            finished_at=timezone.now() - timedelta(hours=1),
        )  # fmt: skip


def test_the_router_switches_when_a_models_telemetry_turns_bad(owner):
    on_pro_plan(owner)
    fast = priced_model("anthropic", "claude-test")
    other = priced_model("openai", "gpt-test")
    session = planned_session(owner, workers=("One", "Two"), models={"One": fast, "Two": other})
    plan_turn(session, tasks=TASKS[:1])
    history("claude-test", 10, session=session, latency_ms=800)
    history("gpt-test", 10, session=session, latency_ms=3000)
    route = POLICY.next_step(session).calls[0].context["journal"][0][1]
    assert route["chosen"] == "claude-test" and all(c["source"] == "history" for c in route["candidates"])
    # Its calls start failing: the success rate falls and the other model wins.
    history("claude-test", 30, status=Turn.TurnStatus.FAILED, session=session)
    step = POLICY.next_step(session)
    route = step.calls[0].context["journal"][0][1]
    assert route["chosen"] == "gpt-test" and step.calls[0].model_id == other.pk
    scores = {c["model"]: c for c in route["candidates"]}
    assert scores["claude-test"]["success"] < 0.3 and scores["gpt-test"]["success"] == 1.0


def test_cold_start_ranks_by_the_catalogue(owner):
    on_pro_plan(owner)
    cheap = priced_model("anthropic", "claude-test")
    dear = priced_model("openai", "gpt-test", input_price_per_mtok=Decimal("30"), output_price_per_mtok=Decimal("60"))
    session = planned_session(owner, workers=("One", "Two"), models={"One": dear, "Two": cheap})
    plan_turn(session, tasks=TASKS[:1])
    route = POLICY.next_step(session).calls[0].context["journal"][0][1]
    assert route["chosen"] == "claude-test" and {c["source"] for c in route["candidates"]} == {"catalogue"}


def test_the_estimate_counts_one_round_whatever_max_rounds_says(session):
    from billing.pricing import estimate_session_credits

    one = estimate_session_credits(session)
    session.max_rounds = 5
    assert estimate_session_credits(session) == one and one[1] > one[0] > 0
