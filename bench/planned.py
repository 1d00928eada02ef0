"""A planned run's wall time against its critical path (see docs/benchmarks.md, "Planned flow").

    .venv/bin/python bench/planned.py          # embedded defaults (SQLite + embedded Redis)

Against the wire-level fake LLM server, through the real Anthropic SDK, every call (plan, task, verify,
assemble) answers after about REPLY_SECONDS (the server's latency before its first byte). The planner returns
a 6-task graph with 2 levels of dependencies: a, b, c; then d (after a, b), e (after b, c), f (after a, c).
engine.drive runs the whole session in this process exactly as a worker does (ready waves, routing, rule
checks and a verifier call per task, assembly). Measured RUNS times:

* wall: from drive() to its return;
* critical path: the longest chain of calls by their measured latency: plan -> (task -> verify) per level
  -> assemble (here 6 calls, ~6 x REPLY_SECONDS);
* ideal: 6 x REPLY_SECONDS.

The target: wall at most 1.1 x the critical path. Prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-planned"))

from bench.harness import make_user, setup_database  # noqa: E402 - sets up Django

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
REPLY_SECONDS = float(os.environ.get("BENCH_REPLY_SECONDS", "2"))
EVALUATION = '\n\n<evaluation>{"scores": {"Clarity": 8}, "feedback": "ok"}</evaluation>'


def _task(task_id: str, deps: list[str]) -> dict:
    return {
        "id": task_id,
        "title": f"Part {task_id}",
        "kind": "section",
        "instructions": f"Write part {task_id}.",
        "depends_on": deps,
        "expected_output": "A section of 40+ words.",
    }


GRAPH = {
    "tasks": [
        _task("a", []),
        _task("b", []),
        _task("c", []),
        _task("d", ["a", "b"]),
        _task("e", ["b", "c"]),
        _task("f", ["a", "c"]),
    ]
}


def reply(request) -> str:
    system = request.system_text
    if "You are the planner of a team" in system:
        return "<plan>" + json.dumps(GRAPH) + "</plan>" + EVALUATION
    if "You are the verifier of a planned team" in system:
        return '<verdict>{"verdict": "pass", "notes": "Complete."}</verdict>' + EVALUATION
    if "You are the assembler of a planned team" in system:
        return "# Report\n\n" + "A merged paragraph. " * 30 + EVALUATION
    return "## A part\n\n" + "A sentence of this part of the report. " * 10 + EVALUATION


def planned_run(user) -> dict:
    """Drive one planned session to its end; returns wall, critical path and call count."""
    from orchestration import engine, services
    from orchestration.flows.planned import run_summary
    from orchestration.models import Agent, Criterion, Flow, LLMModel, Project, Status, Turn, WritingSession

    model = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    project, _ = Project.objects.get_or_create(owner=user, name="Benchmarks")
    session = WritingSession.objects.create(
        project=project, title="planned bench", brief="A report on urban trees.", flow=Flow.PLANNED, max_rounds=1
    )
    for order, role in enumerate(["planner", "worker", "verifier", "assembler"]):
        agent = Agent.objects.create(
            session=session, order=order, name=role.capitalize(), role=role, model=model,
            role_prompt=f"You are the {role}.", max_output_tokens=1024,
        )  # fmt: skip
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    services.start_session(session=session, user=user)
    start = time.perf_counter()
    outcome = engine.drive(session.pk)
    wall = time.perf_counter() - start
    session.refresh_from_db()
    assert session.status == Status.COMPLETED, (outcome, session.stop_detail)
    summary = run_summary(session)
    calls = Turn.objects.filter(session=session).count()
    critical, path = summary["critical_path_seconds"], summary["critical_path"]
    return {"wall": wall, "critical": critical, "calls": calls, "path": path}


def main() -> None:
    from django.conf import settings
    from django.db import connection

    import orchestration.tasks
    from orchestration.providers import clear_adapter_cache
    from tests.fakes.llm_server import FakeLLMServer

    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + embedded Redis"
    print(f"# Planned flow — {backend} — {connection.vendor}, runs={RUNS}, reply ~{REPLY_SECONDS:g} s", flush=True)
    setup_database()
    user = make_user()
    from orchestration.models import ACTIVE_STATUSES, Status, WritingSession

    WritingSession.objects.filter(project__owner=user, status__in=ACTIVE_STATUSES).update(status=Status.STOPPED)
    orchestration.tasks.enqueue_drive = lambda session_id: None  # this process runs the steps itself
    with FakeLLMServer() as fake:
        fake.latency = REPLY_SECONDS
        fake.default_reply = reply
        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)
        clear_adapter_cache()
        runs = [planned_run(user) for _ in range(RUNS)]
        peak = fake.peak_concurrency("anthropic")
    ideal = 6 * REPLY_SECONDS
    print()
    print("| run | calls | wall s | critical path s | ideal s | wall vs critical path |")
    print("|---|---|---|---|---|---|")
    for index, run in enumerate(runs, 1):
        print(
            f"| {index} | {run['calls']} | {run['wall']:.2f} | {run['critical']:.2f} | {ideal:.0f} | "
            f"{run['wall'] / run['critical']:.3f} x |"
        )
    ratio = statistics.median(r["wall"] / r["critical"] for r in runs)
    verdict = "meets" if ratio <= 1.1 else "MISSES"
    print(
        f"\nMedian wall time {ratio:.3f} x the critical path ({verdict} the <= 1.1 x target); "
        f"{runs[0]['calls']} calls per run, at most {peak} at once; critical path {' → '.join(runs[0]['path'])}."
    )


if __name__ == "__main__":
    main()
