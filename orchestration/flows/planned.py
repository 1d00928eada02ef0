"""Planner flow: a task graph planned by a model, run in ready waves, verified, repaired, assembled.

One run is one round (slots of round 1):

* ``plan``: the planner turns the brief into a task graph (orchestration/flows/taskgraph.py). An invalid
  graph gets one ``plan:repair`` call with the validation errors; still invalid, the run fails saying why.
  With ``approve_plan`` on, the run pauses (Waiting) until the owner approves the plan.
* Tasks run in **ready waves**: each step runs every call whose inputs are ready (tasks whose dependencies
  all passed verification, and verifications of finished tasks), under the engine's global and
  per-provider limits. A task sees only its dependencies' results.
* Each task's tries, in order: ``task:<id>`` on the router's best model; up to ``max_repairs``
  ``repair:<id>#k`` on the same model with the verifier's notes; then ``next:<id>`` on the next-best model.
  Each try is checked by rules when it is parsed (non-empty, at least ``min_words`` words) and, if those
  pass, by the verifier (``verify:<try slot>``). A task whose tries all fail is failed; tasks depending on
  it are blocked; the assembly says what is missing.
* ``assemble``: the assembler merges the passed tasks' outputs in plan order into the document.

A policy over persisted turns only: a crash re-plans exactly the calls still missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestration.flows.base import AgentCall, CallShape, Finished, Output, Recipe, Step, Waiting, agents_by_role
from orchestration.flows.editorial import validate_roles
from orchestration.models import Agent, LLMModel, StopReason, Turn, WritingSession

if TYPE_CHECKING:
    from orchestration.evaluation import Evaluation
    from orchestration.model_router import Scored

PLANNER, WORKER, VERIFIER, ASSEMBLER = "planner", "worker", "verifier", "assembler"
ROUND = 1
DEFAULT_CONFIG = {"approve_plan": False, "max_repairs": 1, "min_words": 20}
MAX_REPAIRS_LIMIT = 3


class ConfigError(ValueError):
    """A planned-flow setting out of range, in words for the builder."""


def clean_config(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The planned flow's settings with defaults filled in. Raises ConfigError on a value out of range.

    approve_plan (bool): pause after planning until the owner approves; max_repairs (0-3, default 1):
    repair calls per task before the next-best model; min_words (0-5000, default 20): the rule check.
    """
    config = dict(DEFAULT_CONFIG)
    raw = raw or {}
    config["approve_plan"] = bool(raw.get("approve_plan", config["approve_plan"]))
    for key, low, high in (("max_repairs", 0, MAX_REPAIRS_LIMIT), ("min_words", 0, 5000)):
        value = raw.get(key, config[key])
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key.replace('_', ' ').capitalize()} must be a whole number.") from None
        if not low <= number <= high:
            raise ConfigError(f"{key.replace('_', ' ').capitalize()} must be between {low} and {high}.")
        config[key] = number
    return config


def session_config(session: WritingSession) -> dict[str, Any]:
    try:
        return clean_config(session.flow_config)
    except ConfigError:
        return dict(DEFAULT_CONFIG)


@dataclass(frozen=True)
class Limits:
    max_tasks: int
    parallel_calls: int
    calls_per_provider: int


def limits_for(session: WritingSession) -> Limits:
    """The owner's plan limits for planned runs (billing/plans.py), capped by the engine's settings."""
    from django.conf import settings

    from billing.services import effective_plan, get_account

    plan = effective_plan(get_account(session.project.owner))
    return Limits(
        max_tasks=plan.max_plan_tasks,
        parallel_calls=min(plan.max_parallel_calls, settings.ENGINE_MAX_PARALLEL_CALLS),
        calls_per_provider=min(plan.max_calls_per_provider, settings.ENGINE_MAX_CALLS_PER_PROVIDER),
    )


# --- What the database says --------------------------------------------------------------------


@dataclass
class Slot:
    pk: int
    status: str
    result: dict[str, Any]
    model_used: str
    agent_id: int | None
    given_up: bool = False

    @property
    def done(self) -> bool:
        return self.status == Turn.TurnStatus.COMPLETED


def load_slots(session: WritingSession) -> dict[str, Slot]:
    """slot -> its completed turn, else its latest given-up turn (one query)."""
    slots: dict[str, Slot] = {}
    rows = (
        Turn.objects.filter(session=session, round=ROUND, kind=Turn.Kind.AGENT)
        .exclude(slot="")
        .order_by("pk")
        .values_list("pk", "slot", "status", "result", "model_used", "agent_id")
    )
    for pk, slot, status, result, model_used, agent_id in rows:
        result = result if isinstance(result, dict) else {}
        current = slots.get(slot)
        if current is not None and current.done:
            continue
        if status == Turn.TurnStatus.COMPLETED or result.get("given_up"):
            slots[slot] = Slot(pk, status, result, model_used, agent_id, given_up=bool(result.get("given_up")))
        elif status in (Turn.TurnStatus.TRUNCATED, Turn.TurnStatus.REFUSED):
            # The call ended but its reply is unusable; the engine never re-runs it: a failed try.
            error = "The reply was cut off." if status == Turn.TurnStatus.TRUNCATED else "The model refused."
            slots[slot] = Slot(pk, status, {"error": error}, model_used, agent_id, given_up=True)
    return slots


def current_plan(slots: dict[str, Slot]) -> Slot | None:
    """The plan the run follows: the repaired plan if there is one, else the first."""
    for name in ("plan:repair", "plan"):
        slot = slots.get(name)
        if slot is not None and slot.done:
            return slot
    return None


@dataclass
class TaskState:
    task: dict[str, Any]
    status: str = "waiting"  # waiting | ready | running | passed | failed | blocked
    output: int | None = None  # the turn whose output passed
    tries: list[dict[str, Any]] = field(default_factory=list)  # [{slot, state, notes, model}]
    next_call: str = ""  # "try" or "verify"
    next_slot: str = ""
    all_slots: list[str] = field(default_factory=list)  # every try this task may get, in order


def try_slots(task_id: str, max_repairs: int, has_next: bool) -> list[str]:
    return (
        [f"task:{task_id}"]
        + [f"repair:{task_id}#{k}" for k in range(1, max_repairs + 1)]
        + ([f"next:{task_id}"] * has_next)
    )


def _try_state(slots: dict[str, Slot], slot: str) -> tuple[str, str]:
    """(state, notes) of one try: todo | failed | verify | passed | unverified."""
    turn = slots.get(slot)
    if turn is None:
        return "todo", ""
    if turn.given_up:
        return "failed", f"The call failed: {turn.result.get('error', '')[:300]}"
    if turn.result.get("checks_ok") is False:
        return "failed", "; ".join(turn.result.get("check_notes") or [])
    verify = slots.get(f"verify:{slot}")
    if verify is None:
        return "verify", ""
    if verify.given_up:
        return "unverified", "The verifier failed; the output was kept unverified."
    if verify.result.get("verdict") == "pass":
        return "passed", verify.result.get("notes", "")
    return "failed", verify.result.get("notes", "") or "The verifier rejected the output."


def task_states(
    tasks: list[dict[str, Any]], slots: dict[str, Slot], config: dict[str, Any], has_next: bool
) -> dict[str, TaskState]:
    """Every task's state in plan order, from the slots alone."""
    states: dict[str, TaskState] = {}
    for task in tasks:
        state = TaskState(task=task, all_slots=try_slots(task["id"], config["max_repairs"], has_next))
        for slot in state.all_slots:
            kind, notes = _try_state(slots, slot)
            turn = slots.get(slot)
            state.tries.append({"slot": slot, "state": kind, "notes": notes, "model": turn.model_used if turn else ""})
            if kind in ("passed", "unverified") and turn is not None:
                state.status, state.output = "passed", turn.pk
                break
            if kind == "verify":
                state.status, state.next_call, state.next_slot = "ready", "verify", slot
                break
            if kind == "todo":
                state.next_call, state.next_slot = "try", slot
                break
        else:
            state.status = "failed"
        if state.next_call == "try":
            deps = [states[d] for d in task["depends_on"]]
            if any(d.status in ("failed", "blocked") for d in deps):
                state.status, state.next_call = "blocked", ""
            elif all(d.status == "passed" for d in deps):
                state.status = "ready"
        states[task["id"]] = state
    return states


# --- The policy ----------------------------------------------------------------------------------


def _candidates(session: WritingSession) -> list[tuple[int, LLMModel]]:
    """(worker agent id, catalogue model) for every worker's model and fallback model, in builder order."""
    workers = (
        session.agents.filter(active=True, role__iexact=WORKER)
        .select_related("model", "fallback_model")
        .order_by("order", "pk")
    )
    pairs: list[tuple[int, LLMModel]] = []
    for agent in workers:
        pairs.append((agent.pk, agent.model))
        if agent.fallback_model is not None:
            pairs.append((agent.pk, agent.fallback_model))
    return pairs


class PlannedFlow:
    name = "planned"
    description = (
        "A planner turns the brief into a task graph; workers run the tasks in parallel as their dependencies "
        "finish, each on the model the router picks; a verifier checks each output (repair, then the next-best "
        "model); an assembler merges the results."
    )
    diagram = "Planner → [Task ‖ Task ‖ …] → verify / repair → Assembler"
    roles = (PLANNER, WORKER, VERIFIER, ASSEMBLER)
    phases = (("planning", "Planning"), ("working", "Tasks"), ("assembling", "Assembling"))

    def next_step(self, session: WritingSession) -> Step | Finished | Waiting:
        roles = agents_by_role(session)
        if not (roles.get(PLANNER) and roles.get(WORKER)):
            return Finished(StopReason.ERROR, "The planned flow needs a planner and at least one worker.")
        planner = roles[PLANNER][0]
        verifier = (roles.get(VERIFIER) or [planner])[0]
        assembler = (roles.get(ASSEMBLER) or [planner])[0]
        config = session_config(session)
        limits = limits_for(session)
        slots = load_slots(session)
        for name in ("plan", "plan:repair"):
            if name in slots and slots[name].given_up:
                error = slots[name].result.get("error", "")
                return Finished(StopReason.ERROR, f"The planner could not make a plan. {error}".strip())
        plan = current_plan(slots)
        if plan is None:
            return self._plan_step(session, slots, planner, limits)
        if not plan.result.get("valid"):
            if "plan:repair" in slots or plan.result.get("repair"):
                errors = " ".join(plan.result.get("errors") or [])
                return Finished(
                    StopReason.ERROR, f"The planner's task graph was still invalid after a repair: {errors}"
                )
            return self._plan_step(session, slots, planner, limits, repair_of=plan)
        if config["approve_plan"] and not plan.result.get("approved_at"):
            return Waiting(StopReason.AWAITING_APPROVAL, "The plan is ready: approve it to run the tasks.")
        tasks = plan.result["tasks"]
        candidates = _candidates(session)
        has_next = len({m.pk for _, m in candidates}) > 1
        states = task_states(tasks, slots, config, has_next)
        calls = [
            call
            for s in states.values()
            if s.status == "ready"
            for call in [self._call(s, slots, states, candidates, verifier, config)]
            if call
        ]
        if calls:
            return Step(round=ROUND, calls=calls, quorum=0, phase="working")
        if "assemble" in slots and slots["assemble"].done:
            return self._finished(states)
        if "assemble" in slots and slots["assemble"].given_up:
            return Finished(StopReason.ERROR, "The assembler failed; the task outputs are kept on the page.")
        if not any(s.status == "passed" for s in states.values()):
            return Finished(StopReason.ERROR, "No task of the plan passed verification; there is nothing to assemble.")
        return Step(round=ROUND, calls=[self._assemble_call(states, assembler)], phase="assembling")

    # --- calls ---

    def _plan_step(
        self,
        session: WritingSession,
        slots: dict[str, Slot],
        planner: int,
        limits: Limits,
        repair_of: Slot | None = None,
    ) -> Step:
        context: dict[str, Any] = {"max_tasks": limits.max_tasks}
        task = f"Plan at most {limits.max_tasks} tasks."
        slot = "plan"
        if repair_of is not None:
            slot = "plan:repair"
            errors = repair_of.result.get("errors") or []
            context["repair"] = True
            context["journal"] = [("plan_repair", {"errors": errors})]
            task += " Your previous plan was invalid:\n" + "\n".join(f"- {e}" for e in errors)
            task += "\nReturn a corrected plan."
        call = AgentCall(
            planner, slot=slot, recipe=Recipe.PLAN, output=Output.PLAN, phase="planning", task=task, context=context
        )
        return Step(round=ROUND, calls=[call], phase="planning")

    def _call(
        self,
        state: TaskState,
        slots: dict[str, Slot],
        states: dict[str, TaskState],
        candidates: list[tuple[int, LLMModel]],
        verifier: int,
        config: dict[str, Any],
    ) -> AgentCall | None:
        from orchestration import model_router

        task = state.task
        tid = task["id"]
        brief = _task_text(task)
        deps = tuple(output for d in task["depends_on"] if (output := states[d].output))
        labels = {states[d].output: f"{d}: {states[d].task['title']}" for d in task["depends_on"] if states[d].output}
        last_try = state.next_slot == state.all_slots[-1]
        if state.next_call == "verify":
            return _verify_call(state, slots[state.next_slot], verifier, brief, last_try=last_try)
        if not candidates:
            return None
        failed = [t for t in state.tries if t["state"] == "failed"]
        context = {
            "task_id": tid,
            "kind": task["kind"],
            "try": state.next_slot,
            "last_try": last_try,
            "min_words": config["min_words"],
            "labels": labels,
        }
        ranked = model_router.rank(candidates, task["kind"])
        chosen, why = _route(state.next_slot, ranked, failed)
        context["journal"] = [("route", model_router.decision(tid, task["kind"], ranked, chosen, why))]
        inputs = deps
        if failed:
            notes = failed[-1]["notes"] or "The output did not pass."
            brief += f"\n\nAn earlier attempt at this task failed verification. The verifier's notes:\n{notes}"
            previous = slots.get(failed[-1]["slot"])
            if previous is not None and not previous.given_up:
                inputs = (*deps, previous.pk)
                labels[previous.pk] = f"Your earlier attempt at {tid} (failed verification)"
            context["journal"].append(("task_repair", {"task": tid, "try": state.next_slot, "notes": notes[:1000]}))
        return AgentCall(
            chosen.agent_id,
            slot=state.next_slot,
            recipe=Recipe.TASK,
            output=Output.NOTES,
            inputs=inputs,
            phase="working",
            task=brief,
            model_id=chosen.model.pk,
            context=context,
        )

    def _assemble_call(self, states: dict[str, TaskState], assembler: int) -> AgentCall:
        parts = [
            {"task": tid, "title": s.task["title"], "turn": s.output}
            for tid, s in states.items()
            if s.status == "passed"
        ]
        missing = [
            {"task": tid, "title": s.task["title"], "why": s.status}
            for tid, s in states.items()
            if s.status != "passed"
        ]
        task = "Merge these task outputs into one document, in this order: " + ", ".join(
            f"{p['task']} ({p['title']})" for p in parts
        )
        if missing:
            task += ". These tasks failed, so their parts are missing: " + ", ".join(
                f"{m['task']} ({m['title']})" for m in missing
            )
            task += ". Say in one line at the end which parts are missing."
        return AgentCall(
            assembler,
            slot="assemble",
            recipe=Recipe.ASSEMBLE,
            output=Output.DOCUMENT,
            inputs=tuple(p["turn"] for p in parts),
            phase="assembling",
            task=task,
            context={
                "parts": parts,
                "missing": missing,
                "labels": {p["turn"]: f"{p['task']}: {p['title']}" for p in parts},
                "journal": [("assembly", {"parts": parts, "missing": missing})],
            },
        )

    def _finished(self, states: dict[str, TaskState]) -> Finished:
        done = [t for t, s in states.items() if s.status == "passed"]
        missing = [f"{t} ({s.status})" for t, s in states.items() if s.status != "passed"]
        detail = f"{len(done)} of {len(states)} tasks done."
        if missing:
            detail += " Missing: " + ", ".join(missing) + "."
        return Finished(StopReason.PLAN_DONE, detail)

    # --- builder support ---

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        problems = validate_roles(
            agents,
            required={PLANNER: (1, 1), WORKER: (1, None), VERIFIER: (0, 1), ASSEMBLER: (0, 1)},
            flow_label="The planned flow",
        )
        try:
            clean_config(session.flow_config)
        except ConfigError as error:
            problems.append(str(error))
        if getattr(session, "pk", None) and limits_for(session).max_tasks < 1:
            problems.append("Your plan does not include planned runs: upgrade to run a task graph.")
        return problems

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        """Worst case: the plan's largest graph, every task tried 1 + repairs + next-best, each verified."""
        config = session_config(session)
        max_tasks = max(1, limits_for(session).max_tasks) if getattr(session, "pk", None) else 8
        tries = 2 + config["max_repairs"]
        roles = [(r or "").strip().lower() for r in roles]
        workers = max(1, roles.count(WORKER))
        has_verifier, has_assembler = VERIFIER in roles, ASSEMBLER in roles
        per_worker = -(-max_tasks * tries // workers)
        calls = []
        for role in roles:
            n = {WORKER: per_worker, VERIFIER: max_tasks * tries, ASSEMBLER: 1}.get(role, 0)
            if role == PLANNER:
                n = 2 + (0 if has_verifier else max_tasks * tries) + (0 if has_assembler else 1)
            calls.append(n)
        return CallShape(calls_per_round=calls, reviewer_roles=(WORKER,), reader_roles=(ASSEMBLER,), max_rounds=ROUND)

    def final_events(self, session: WritingSession) -> list[tuple[str, dict[str, Any]]]:
        """The journal's last entry: the run summary (orchestration/flows/planned.py run_summary)."""
        return [("run_summary", run_summary(session))]


def _task_text(task: dict[str, Any]) -> str:
    return (
        f"Task {task['id']} ({task['kind']}): {task['title']}\n\n{task['instructions']}\n\n"
        f"Expected output: {task['expected_output']}"
    )


def run_summary(session: WritingSession) -> dict[str, Any]:
    """The run's stats from its turns: per task (status, model, tries, seconds, tokens, credits, cost),
    totals, and the critical path (the longest dependency chain by task seconds). Empty before a plan."""
    from orchestration.flows.taskgraph import critical_path

    slots = load_slots(session)
    plan = current_plan(slots)
    if plan is None or not plan.result.get("valid"):
        return {}
    tasks = plan.result["tasks"]
    config = session_config(session)
    has_next = len({m.pk for _, m in _candidates(session)}) > 1
    states = task_states(tasks, slots, config, has_next)
    turns = {
        t.slot: t
        for t in Turn.objects.filter(session=session, round=ROUND, kind=Turn.Kind.AGENT).only(
            "slot", "latency_ms", "input_tokens", "output_tokens", "credits", "provider_cost", "model_used", "status"
        )
    }
    rows, seconds = [], {}
    totals = {"input_tokens": 0, "output_tokens": 0, "credits": 0, "cost_usd": 0.0}
    for tid, state in states.items():
        used = [t for t in turns.values() if _belongs(t.slot, tid)]
        secs = sum((t.latency_ms or 0) for t in used) / 1000
        seconds[tid] = secs
        row = {
            "task": tid,
            "title": state.task["title"],
            "kind": state.task["kind"],
            "status": state.status,
            "tries": sum(1 for t in state.tries if t["state"] != "todo"),
            "model": next((t["model"] for t in reversed(state.tries) if t["model"]), ""),
            "seconds": round(secs, 2),
            "input_tokens": sum(t.input_tokens for t in used),
            "output_tokens": sum(t.output_tokens for t in used),
            "credits": sum(t.credits for t in used),
            "cost_usd": round(float(sum(t.provider_cost for t in used)), 6),
        }
        rows.append(row)
    for t in turns.values():
        totals["input_tokens"] += t.input_tokens
        totals["output_tokens"] += t.output_tokens
        totals["credits"] += t.credits
        totals["cost_usd"] += float(t.provider_cost)
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    length, path = critical_path(tasks, seconds)
    plan_secs = sum((turns[s].latency_ms or 0) for s in ("plan", "plan:repair") if s in turns) / 1000
    assemble_secs = (turns["assemble"].latency_ms or 0) / 1000 if "assemble" in turns else 0.0
    wall = None
    if session.started_at and session.finished_at:
        wall = round((session.finished_at - session.started_at).total_seconds(), 2)
    return {
        "tasks": rows,
        "totals": totals,
        "critical_path": path,
        "critical_path_seconds": round(plan_secs + length + assemble_secs, 2),
        "wall_seconds": wall,
        "done": sum(1 for r in rows if r["status"] == "passed"),
        "missing": [r["task"] for r in rows if r["status"] != "passed"],
    }


def _belongs(slot: str, task_id: str) -> bool:
    """Whether a slot is one of this task's tries or their verifications."""
    name = slot.removeprefix("verify:")
    kind, _, rest = name.partition(":")
    return kind in ("task", "repair", "next") and rest.split("#")[0] == task_id


# --- Prompts and replies of the planned recipes (called by the engine through orchestration.flows) ---

PLANNED_RECIPES = frozenset({Recipe.PLAN, Recipe.TASK, Recipe.VERIFY, Recipe.ASSEMBLE})
_VERDICT_TAG = re.compile(r"<verdict>\s*(.*?)\s*(?:</verdict>|$)", re.S | re.I)


def call_material(call: AgentCall) -> list[tuple[str, str]]:
    """What a planned call reads, as labelled blocks: its task, then its inputs' outputs (evaluations cut)."""
    from orchestration.evaluation import parse_reply

    blocks = [("Task", call.task)] if call.task else []
    labels = {int(k): v for k, v in (call.context.get("labels") or {}).items()}
    texts = dict(Turn.objects.filter(pk__in=list(call.inputs)).values_list("pk", "output_text"))
    for pk in call.inputs:
        if pk in texts:
            blocks.append((labels.get(pk, f"Result {pk}"), parse_reply(texts[pk], [])[0].strip()))
    return blocks


def parse_verdict(text: str) -> tuple[str, str, str]:
    """(verdict "pass" | "fail", notes, tier) from a verifier's reply. Never raises.

    json: a <verdict> block or JSON object with "verdict"; text: a line starting PASS or FAIL (or
    "verdict: pass"); none: unreadable, read as a fail so a task is never passed on a reply nobody understood.
    """
    from orchestration.evaluation.json_scan import json_candidates, try_load

    tagged = _VERDICT_TAG.search(text or "")
    body = tagged.group(1) if tagged else (text or "")
    values = [v for v in [try_load(body.strip())] if v is not None] + json_candidates(body)
    for value in values:
        if isinstance(value, dict) and str(value.get("verdict", "")).strip().lower() in ("pass", "fail"):
            return str(value["verdict"]).strip().lower(), str(value.get("notes") or "")[:2000], "json"
    match = re.search(r"^\W*(?:verdict\W*)?(pass(?:ed|es)?|fail(?:ed|s)?)\b[\s:.-]*(.*)$", body, re.I | re.M)
    if match:
        verdict = "pass" if match.group(1).lower().startswith("pass") else "fail"
        return verdict, match.group(2).strip()[:2000], "text"
    return "fail", "The verifier's reply had no verdict Atelier could read.", "none"


def parse_planned(
    call: AgentCall, text: str, criteria: list[tuple[str, float]]
) -> tuple[str, Evaluation, dict[str, Any]]:
    """(document, evaluation, Turn.result) of a planned call; result["_events"] are journalled. Never raises."""
    from orchestration.evaluation import parse_reply
    from orchestration.flows.structured import strip_blocks
    from orchestration.flows.taskgraph import parse_plan

    body, evaluation = parse_reply(text, criteria)
    context = call.context
    if call.recipe == Recipe.PLAN:
        result = parse_plan(body, max_tasks=int(context.get("max_tasks") or 1))
        result["repair"] = bool(context.get("repair"))
        summary = {k: result[k] for k in ("valid", "waves", "errors", "repair")}
        result["_events"] = [
            (
                "plan",
                {
                    **summary,
                    "tasks": [{k: t[k] for k in ("id", "title", "kind", "depends_on")} for t in result["tasks"]],
                },
            )
        ]
        return "", evaluation, result
    tid, attempt = context.get("task_id", ""), context.get("try", "")
    if call.recipe == Recipe.TASK:
        words = len(body.split())
        notes = []
        if not body.strip():
            notes.append("The output is empty.")
        elif words < int(context.get("min_words") or 0):
            notes.append(f"The output has {words} words; at least {context['min_words']} are expected.")
        result = {"task": tid, "try": attempt, "kind": context.get("kind", ""), "words": words,
                  "checks_ok": not notes, "check_notes": notes}  # fmt: skip
        events = [("task_output", {"task": tid, "try": attempt, "words": words, "checks_ok": not notes})]
        if notes:
            events.append(
                (
                    "task_verified",
                    {"task": tid, "try": attempt, "passed": False, "by": "rules", "notes": " ".join(notes)},
                )
            )
            if context.get("last_try"):
                events.append(("task_failed", {"task": tid, "notes": " ".join(notes)}))
        result["_events"] = events
        return "", evaluation, result
    if call.recipe == Recipe.VERIFY:
        verdict, verdict_notes, tier = parse_verdict(body)
        result = {"task": tid, "try": attempt, "verdict": verdict, "notes": verdict_notes, "tier": tier}
        passed = verdict == "pass"
        short = verdict_notes[:1000]
        events = [("task_verified", {"task": tid, "try": attempt, "passed": passed, "by": "verifier", "notes": short})]
        if not passed and context.get("last_try"):
            events.append(("task_failed", {"task": tid, "notes": short}))
        result["_events"] = events
        return "", evaluation, result
    document = strip_blocks(body)
    result = {"parts": context.get("parts", []), "missing": context.get("missing", [])}
    return document, evaluation, result


def summary_markdown(session: WritingSession, summary: dict[str, Any]) -> str:
    """The run summary as a Markdown export (the report download of a planned session)."""
    lines = [f"# Run summary: {session.title}", ""]
    if not summary:
        return "\n".join([*lines, "No valid plan yet.", ""])
    totals = summary["totals"]
    lines += [
        f"- Tasks done: {summary['done']} of {len(summary['tasks'])}"
        + (f" (missing: {', '.join(summary['missing'])})" if summary["missing"] else ""),
        f"- Critical path: {' → '.join(summary['critical_path'])} — {summary['critical_path_seconds']} s of calls"
        + (f"; wall time {summary['wall_seconds']} s" if summary["wall_seconds"] is not None else ""),
        f"- Tokens: {totals['input_tokens']:,} input, {totals['output_tokens']:,} output; "
        f"credits {totals['credits']:,}; provider cost ${totals['cost_usd']:.4f}",
        "",
        "| Task | Kind | Status | Model | Tries | Seconds | Tokens in / out | Credits | Cost (USD) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["tasks"]:
        lines.append(
            f"| {row['task']}: {row['title']} | {row['kind']} | {row['status']} | {row['model'] or '-'} | "
            f"{row['tries']} | {row['seconds']} | {row['input_tokens']:,} / {row['output_tokens']:,} | "
            f"{row['credits']:,} | {row['cost_usd']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _route(slot: str, ranked: list[Scored], failed: list[dict[str, Any]]) -> tuple[Scored, str]:
    """The model for a task's try `slot` (ranked best first, never empty) and why, for the routing journal.

    A first try takes the best; a repair stays on the model whose output failed; a later try takes the
    best model not yet failed (the last-ranked when every one has).
    """
    if slot.startswith("task:"):
        return ranked[0], "Highest score for this kind of task."
    if slot.startswith("repair:"):
        used = failed[-1]["model"] if failed else ""
        return next((s for s in ranked if s.model.model_id == used), ranked[0]), (
            "Repair on the same model, with the verifier's notes."
        )
    tried = {t["model"] for t in failed}
    return next((s for s in ranked if s.model.model_id not in tried), ranked[-1]), (
        "Next-best model after the repairs failed."
    )


def _verify_call(state: TaskState, turn: Slot, verifier: int, brief: str, *, last_try: bool) -> AgentCall:
    """The verifier's call on the output `turn` of the task's current try (`state.next_slot`)."""
    tid = state.task["id"]
    return AgentCall(
        verifier,
        slot=f"verify:{state.next_slot}",
        recipe=Recipe.VERIFY,
        output=Output.NOTES,
        inputs=(turn.pk,),
        phase="working",
        task=brief,
        context={"task_id": tid, "try": state.next_slot, "last_try": last_try, "labels": {turn.pk: tid}},
    )
