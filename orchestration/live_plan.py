"""The planned flow on the live page: the plan as an ordered list of waves, each task's state, the router's
decision with its scores, and the run summary. Reads the database only (the planned policy's own state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.template.loader import render_to_string

from orchestration.models import Flow, SessionEvent, Status, StopReason, Turn, WritingSession

if TYPE_CHECKING:
    from orchestration.live_flows import Phase

PLAN_TEMPLATE = "orchestration/partials/live_plan.html"
# Events after which the plan panel is drawn again (they all carry the turn they are about).
PLAN_EVENT_KINDS = frozenset(
    {"plan", "plan_repair", "plan_approved", "route", "task_repair", "task_output", "task_verified", "task_failed",
     "assembly", "run_summary"}
)  # fmt: skip
STATUS_LABELS = {
    "waiting": "Waiting for its dependencies",
    "ready": "Ready",
    "running": "Running",
    "verifying": "Being verified",
    "passed": "Passed",
    "failed": "Failed",
    "blocked": "Blocked: a dependency failed",
}


def plan_view(session: WritingSession) -> dict[str, Any] | None:
    """What the panel shows, or None for other flows. Keys: state (planning | invalid | ready | approval |
    running | done), errors, waves [[task rows]], summary, tasks total/passed."""
    from orchestration.flows import planned

    if session.flow != Flow.PLANNED:
        return None
    slots = planned.load_slots(session)
    plan = planned.current_plan(slots)
    view: dict[str, Any] = {"session": session, "waves": [], "errors": [], "summary": None}
    if plan is None:
        view["state"] = "planning"
        return view
    if not plan.result.get("valid"):
        view["state"] = "invalid"
        view["errors"] = plan.result.get("errors") or []
        view["repairing"] = "plan:repair" not in slots
        return view
    tasks = plan.result["tasks"]
    config = planned.session_config(session)
    has_next = len({m.pk for _, m in planned._candidates(session)}) > 1
    states = planned.task_states(tasks, slots, config, has_next)
    streaming = set(
        Turn.objects.filter(session=session, round=planned.ROUND, status=Turn.TurnStatus.STREAMING).values_list(
            "slot", flat=True
        )
    )
    routes: dict[str, dict[str, Any]] = {}
    for payload in (
        SessionEvent.objects.filter(session=session, kind="route").order_by("seq").values_list("payload", flat=True)
    ):
        routes[payload.get("task", "")] = payload
    rows = {}
    for task_id, state in states.items():
        status = state.status
        slots_of_task = {t["slot"] for t in state.tries} | {f"verify:{t['slot']}" for t in state.tries}
        running = streaming & slots_of_task
        if running:
            status = "verifying" if any(s.startswith("verify:") for s in running) else "running"
        rows[task_id] = {
            "task": state.task,
            "status": status,
            "label": STATUS_LABELS.get(status, status),
            "tries": [t for t in state.tries if t["state"] != "todo"],
            "route": routes.get(task_id),
        }
    view["waves"] = [[rows[t] for t in wave if t in rows] for wave in plan.result.get("waves") or []]
    view["total"] = len(tasks)
    view["passed"] = sum(1 for s in states.values() if s.status == "passed")
    awaiting = session.status == Status.PAUSED and session.stop_reason == StopReason.AWAITING_APPROVAL
    view["approved"] = bool(plan.result.get("approved_at"))
    if awaiting:
        view["state"] = "approval"
    elif session.is_finished and "assemble" in slots:
        view["state"] = "done"
        view["summary"] = planned.run_summary(session)
    else:
        view["state"] = "running"
    return view


def plan_html(session: WritingSession) -> str:
    view = plan_view(session)
    return render_to_string(PLAN_TEMPLATE, {"plan": view, "session": session}) if view is not None else ""


def planned_phases(session: WritingSession) -> list[Phase]:
    """The header's phases for a planned run: Planning -> Tasks (n of N finished) -> Assembling."""
    from orchestration.flows import planned
    from orchestration.live_flows import Phase

    slots = planned.load_slots(session)
    plan = planned.current_plan(slots)
    streaming = list(
        Turn.objects.filter(session=session, round=planned.ROUND, status=Turn.TurnStatus.STREAMING).values_list(
            "slot", flat=True
        )
    )
    planning = Phase("planning", "Planning", 1, done=int(bool(plan and plan.result.get("valid"))))
    planning.running = sum(1 for s in streaming if s.startswith("plan"))
    tasks = Phase("working", "Tasks", 0)
    if plan is not None and plan.result.get("valid"):
        config = planned.session_config(session)
        has_next = len({m.pk for _, m in planned._candidates(session)}) > 1
        states = planned.task_states(plan.result["tasks"], slots, config, has_next)
        tasks.planned = len(states)
        tasks.done = sum(1 for s in states.values() if s.status in ("passed", "failed", "blocked"))
        tasks.missing = [s.task["title"] for s in states.values() if s.status in ("failed", "blocked")]
    tasks.running = sum(1 for s in streaming if s.split(":", 1)[0] in ("task", "repair", "next", "verify"))
    assembling = Phase("assembling", "Assembling", 1, done=int("assemble" in slots and slots["assemble"].done))
    assembling.running = int("assemble" in streaming)
    return [planning, tasks, assembling]
