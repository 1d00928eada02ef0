"""The planned flow end to end: plan, ready waves, routing, verification, repair, fallback, assembly."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from orchestration.models import SessionEvent, Status, StopReason, Turn
from tests.orchestration.engine_helpers import priced_model
from tests.orchestration.flow_helpers import demo_model, planned_session
from tests.orchestration.test_engine import run_to_end, start

pytestmark = pytest.mark.django_db(transaction=True)


def kinds(session) -> list[str]:
    return list(SessionEvent.objects.filter(session=session).values_list("kind", flat=True))


def test_the_demo_plans_runs_verifies_and_assembles_a_document(enqueued, rich_owner, settings):
    settings.DEMO_TOKENS_PER_SECOND = 0
    demo = demo_model()
    session = planned_session(rich_owner, models=dict.fromkeys(("Planner", "Worker", "Verifier", "Assembler"), demo))
    start(session, rich_owner)
    outcome = run_to_end(session)

    assert session.status == Status.COMPLETED, (outcome, session.stop_detail)
    assert session.stop_reason == StopReason.PLAN_DONE
    plan = Turn.objects.get(session=session, slot="plan")
    assert plan.result["valid"] and plan.result["waves"] == [
        ["research"],
        ["context", "case", "objections"],
        ["conclusion"],
    ]
    for task_id in ("research", "context", "case", "objections", "conclusion"):
        verify = Turn.objects.get(session=session, slot=f"verify:task:{task_id}")
        assert verify.result["verdict"] == "pass", verify.result
    assert "## The case" in session.document and "## Conclusion" in session.document
    log = kinds(session)
    assert log.count("route") == 5 and log.count("task_verified") == 5
    assert "plan" in log and "assembly" in log and log[-1] in ("run_summary", "status")
    summary = SessionEvent.objects.get(session=session, kind="run_summary").payload
    path = summary["critical_path"]
    assert summary["done"] == 5 and len(path) == 3 and path[0] == "research" and path[-1] == "conclusion"


# --- Through the real SDKs and the fake server ------------------------------------------------------

GRAPH = {
    "tasks": [
        {"id": "a", "title": "Part A", "kind": "research", "instructions": "Do A.", "depends_on": [],
         "expected_output": "A list."},
        {"id": "b", "title": "Part B", "kind": "section", "instructions": "Do B.", "depends_on": ["a"],
         "expected_output": "A section."},
    ]
}  # fmt: skip


def recipe(request) -> str:
    system = request.system_text
    for marker, name in (
        ("You are the planner of a team", "plan"),
        ("You are a worker of a planned team", "task"),
        ("You are the verifier of a planned team", "verify"),
        ("You are the assembler of a planned team", "assemble"),
    ):
        if marker in system:
            return name
    return "revise"


def task_of(request) -> str:
    match = re.search(r"Task (\S+) \(", request.user_text)
    return match.group(1) if match else "?"


EVALUATION = '\n\n<evaluation>\n{"scores": {"Clarity": 8}, "feedback": "ok"}\n</evaluation>'


def planned_replies(*, plans=None, verdict=None, graph=GRAPH):
    """A reply function: `plans` is a list of planner replies used in order (then `graph`); `verdict(task, output)`
    says "pass" or "fail" (default pass); workers write 30+ words naming their task and model."""
    plans = list(plans or [])

    def reply(request) -> str:
        kind = recipe(request)
        if kind == "plan":
            text = plans.pop(0) if plans else "<plan>\n" + json.dumps(graph) + "\n</plan>"
            return text + EVALUATION
        if kind == "task":
            model = request.json["model"]
            words = " ".join(["word"] * 30)
            return f"## Output of {task_of(request)} by {model}\n\n{words}" + EVALUATION
        if kind == "verify":
            output = request.user_text.split("Output of", 1)[-1]
            ok = verdict(task_of(request), output) if verdict else "pass"
            return f'<verdict>{{"verdict": "{ok}", "notes": "checked {task_of(request)}"}}</verdict>' + EVALUATION
        if kind == "assemble":
            parts = re.findall(r"## Output of (\S+) by (\S+)", request.user_text)
            return "# Report\n\n" + "\n\n".join(f"Part {t} (by {m})" for t, m in parts) + EVALUATION
        return "?" + EVALUATION

    return reply


def test_a_cyclic_plan_is_repaired_once_with_the_errors(providers, enqueued, rich_owner):
    cyclic = {"tasks": [{**GRAPH["tasks"][0], "depends_on": ["b"]}, GRAPH["tasks"][1]]}
    providers.default_reply = planned_replies(plans=["<plan>" + json.dumps(cyclic) + "</plan>"])
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    first, repaired = (
        Turn.objects.get(session=session, slot="plan"),
        Turn.objects.get(session=session, slot="plan:repair"),
    )
    assert not first.result["valid"] and "cycle: a → b → a" in first.result["errors"][0]
    assert repaired.result["valid"] and repaired.result["waves"] == [["a"], ["b"]]
    planner_requests = [r for r in providers.generation_requests() if recipe(r) == "plan"]
    assert len(planner_requests) == 2 and "cycle: a → b → a" in planner_requests[1].user_text
    assert "plan_repair" in kinds(session)
    assert session.document.startswith("# Report") and "Part a" in session.document and "Part b" in session.document


def test_a_plan_still_invalid_after_its_repair_fails_the_run_clearly(providers, enqueued, rich_owner):
    unknown = {"tasks": [{**GRAPH["tasks"][1], "depends_on": ["zzz"]}]}
    providers.default_reply = planned_replies(plans=["<plan>" + json.dumps(unknown) + "</plan>", "Sorry, no JSON."])
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.FAILED
    assert "still invalid after a repair" in session.stop_detail and "No task graph found" in session.stop_detail
    first = Turn.objects.get(session=session, slot="plan")
    assert first.result["errors"] == ["Task “b” depends on “zzz”, which is not a task of the plan."]
    assert not Turn.objects.filter(session=session, recipe="task").exists()


def test_an_empty_or_oversized_plan_is_refused_by_the_plan_limit(providers, enqueued, rich_owner):
    from billing.plans import PLANS, PRO

    many = {"tasks": [{**GRAPH["tasks"][0], "id": f"t{i}"} for i in range(PLANS[PRO].max_plan_tasks + 1)]}
    providers.default_reply = planned_replies(
        plans=['<plan>{"tasks": []}</plan>', "<plan>" + json.dumps(many) + "</plan>"]
    )
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.FAILED
    assert Turn.objects.get(session=session, slot="plan").result["errors"] == [
        "The plan has no tasks: list at least one."
    ]
    assert f"at most {PLANS[PRO].max_plan_tasks} are allowed" in session.stop_detail


def test_a_task_failing_verification_is_repaired_then_falls_back_to_the_next_best_model(
    providers, enqueued, rich_owner
):
    cheap = priced_model("anthropic", "claude-test")
    dear = priced_model("openai", "gpt-test", input_price_per_mtok=Decimal("10"), output_price_per_mtok=Decimal("40"))
    # Task "a" passes only when the OpenAI model wrote it; "b" passes at once.
    providers.default_reply = planned_replies(
        verdict=lambda task, out: "pass" if task == "b" or "gpt-test" in out else "fail"
    )
    session = planned_session(rich_owner, workers=("Cheap", "Dear"), models={"Cheap": cheap, "Dear": dear})
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    tries = list(
        Turn.objects.filter(session=session, recipe="task", slot__in=["task:a", "repair:a#1", "next:a"])
        .order_by("pk")
        .values_list("slot", "model_used")
    )
    assert tries == [("task:a", "claude-test"), ("repair:a#1", "claude-test"), ("next:a", "gpt-test")]
    repair_request = next(
        r for r in providers.generation_requests() if recipe(r) == "task" and "verifier's notes" in r.user_text
    )
    assert "checked a" in repair_request.user_text and "Your earlier attempt at a" in repair_request.user_text
    routes = [e.payload for e in SessionEvent.objects.filter(session=session, kind="route").order_by("seq")]
    assert [r["chosen"] for r in routes if r["task"] == "a"] == ["claude-test", "claude-test", "gpt-test"]
    assert all(len(r["candidates"]) == 2 and r["candidates"][0]["score"] >= r["candidates"][1]["score"] for r in routes)
    assert "task_repair" in kinds(session) and "task_failed" not in kinds(session)
    assert "Part a (by gpt-test)" in session.document


def test_a_task_that_still_fails_is_marked_failed_and_the_assembly_says_what_is_missing(
    providers, enqueued, rich_owner
):
    providers.default_reply = planned_replies(verdict=lambda task, out: "fail" if task == "a" else "pass")
    graph = {"tasks": [*GRAPH["tasks"], {**GRAPH["tasks"][0], "id": "c", "title": "Part C"}]}
    providers.default_reply = planned_replies(verdict=lambda task, out: "fail" if task == "a" else "pass", graph=graph)
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    assert session.stop_detail == "1 of 3 tasks done. Missing: a (failed), b (blocked)."
    assert SessionEvent.objects.filter(session=session, kind="task_failed", payload__task="a").count() == 1
    assert not Turn.objects.filter(session=session, slot="task:b").exists()  # blocked: never run, never paid
    assemble = Turn.objects.get(session=session, slot="assemble")
    assert [m["task"] for m in assemble.result["missing"]] == ["a", "b"]
    request = next(r for r in providers.generation_requests() if recipe(r) == "assemble")
    assert "their parts are missing: a (Part A), b (Part B)" in request.user_text


def test_never_more_calls_to_one_provider_than_the_limit(providers, enqueued, rich_owner, settings):
    settings.ENGINE_MAX_CALLS_PER_PROVIDER = 2
    graph = {"tasks": [{**GRAPH["tasks"][0], "id": f"t{i}", "title": f"Part {i}"} for i in range(6)]}
    providers.default_reply = planned_replies(graph=graph)
    providers.tokens_per_second = 200  # each reply streams for a while, so the calls overlap
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    assert Turn.objects.filter(session=session, recipe="task", status=Turn.TurnStatus.COMPLETED).count() == 6
    # Measured at the server: two at once (the limit was reached, so it was needed), never three.
    assert providers.peak_concurrency("anthropic") == 2


def test_the_global_limit_holds_across_providers(providers, enqueued, rich_owner, settings):
    settings.ENGINE_MAX_PARALLEL_CALLS = 3
    graph = {"tasks": [{**GRAPH["tasks"][0], "id": f"t{i}", "title": f"Part {i}"} for i in range(6)]}
    providers.default_reply = planned_replies(graph=graph)
    providers.tokens_per_second = 200
    other = priced_model("openai", "gpt-test")
    session = planned_session(rich_owner, workers=("One", "Two"), models={"Two": other})
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    assert providers.peak_concurrency("all") == 3


def test_approve_plan_pauses_after_planning_and_the_approval_runs_the_tasks(providers, enqueued, rich_owner):
    from orchestration import services

    providers.default_reply = planned_replies()
    session = planned_session(rich_owner, flow_config={"approve_plan": True})
    start(session, rich_owner)
    assert run_to_end(session) == "paused"
    assert session.status == Status.PAUSED and session.stop_reason == StopReason.AWAITING_APPROVAL
    assert not Turn.objects.filter(session=session, recipe="task").exists()
    with pytest.raises(services.ServiceError, match="waiting for your approval"):
        services.resume_session(session=session, user=rich_owner)

    services.approve_plan(session=session, user=rich_owner)
    session.refresh_from_db()
    assert session.status == Status.QUEUED and enqueued
    run_to_end(session)
    assert session.status == Status.COMPLETED, session.stop_detail
    assert Turn.objects.get(session=session, slot="plan").result["approved_by"] == rich_owner.pk
    assert kinds(session).count("plan_approved") == 1
    with pytest.raises(services.ServiceError, match="not waiting for a plan approval"):
        services.approve_plan(session=session, user=rich_owner)


def test_run_session_prints_the_plan_routes_verdicts_and_summary(providers, enqueued, rich_owner):
    from io import StringIO

    from django.core.management import call_command

    providers.default_reply = planned_replies()
    session = planned_session(rich_owner)
    out = StringIO()
    call_command("run_session", str(session.pk), "--no-stream", stdout=out)
    text = out.getvalue()
    assert "[Plan] 2 tasks in waves: a ; b" in text
    assert "[Task a] routed to claude-test (Highest score for this kind of task. Scores: claude-test" in text
    assert "[Round 1 · Worker · task:a]" in text and "[Task b] passed verifier check: checked b" in text
    assert "[Summary] 2 of 2 tasks done; critical path a → b" in text
    assert "Ended: Completed — Every task of the plan ran and the document was assembled (2 of 2 tasks done.)" in text


def test_the_run_summary_exports_as_markdown_and_json_for_the_owner_only(providers, enqueued, rich_owner, client):
    from django.contrib.auth import get_user_model

    providers.default_reply = planned_replies()
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)
    client.force_login(rich_owner)
    data = client.get(f"/sessions/{session.pk}/report.json").json()
    assert data["done"] == 2 and [r["task"] for r in data["tasks"]] == ["a", "b"]
    assert data["critical_path"] == ["a", "b"] and data["totals"]["credits"] == session.credits_used
    markdown = client.get(f"/sessions/{session.pk}/report.md").content.decode()
    assert "- Tasks done: 2 of 2" in markdown and "| a: Part A | research | passed | claude-test | 1 |" in markdown
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'data-testid="plan-summary"' in page and "2 of 2 tasks done" in page
    outsider = get_user_model().objects.create_user("outsider", "outsider@example.com", "pw-123456789")
    client.force_login(outsider)
    assert client.get(f"/sessions/{session.pk}/report.json").status_code == 404


def test_the_live_page_shows_no_template_comment_text(providers, enqueued, rich_owner, client):
    providers.default_reply = planned_replies()
    session = planned_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)
    client.force_login(rich_owner)
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert "One turn of the transcript" not in page and "{#" not in page
