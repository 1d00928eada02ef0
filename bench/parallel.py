"""A parallel round's wall time against one call's (see docs/benchmarks.md, "Parallel agents").

    .venv/bin/python bench/parallel.py          # embedded defaults (SQLite + embedded Redis)

Against the wire-level fake LLM server, through the real Anthropic SDK, every reply streams for about
2 s. Measures, RUNS times each:
1. one bare SDK streaming call (no Atelier code): the wall time of one call;
2. the engine running a roundtable's review step with ONE critic (one call plus all our work around it);
3. the engine running the review step with FIVE critics in parallel (engine.run_step, exactly what a
   worker runs: prompts, reservations, five concurrent streams, chunk batches, saving, settling).
The target: (3) at most 1.1 x (1). Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Its own database and embedded Redis: other benchmarks may be using var/bench at the same time.
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-parallel"))

from bench.harness import make_user, setup_database  # noqa: E402 - sets up Django

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
REPLY_SECONDS = float(os.environ.get("BENCH_REPLY_SECONDS", "2"))
ISSUES = [
    {"severity": "high", "passage": "Cities need trees", "problem": "No evidence.", "fix": "Cite a study."},
    {"severity": "low", "passage": "shade", "problem": "Vague.", "fix": "Say how much."},
]
REPLY = (
    "The draft is clear but thin on evidence. " * 8
    + "\n\n<issues>\n"
    + json.dumps(ISSUES)
    + '\n</issues>\n\n<evaluation>{"scores": {"Clarity": 6}, "feedback": "Add evidence."}</evaluation>'
)
CHUNK = 4  # characters per chunk, as the fake server streams


def paced(fake) -> None:
    """Every reply streams for about REPLY_SECONDS."""
    chunks = len(REPLY) / CHUNK
    fake.chunk_size = CHUNK
    fake.tokens_per_second = chunks / REPLY_SECONDS
    fake.default_reply = REPLY


def bare_call(fake) -> float:
    import anthropic

    async def run() -> float:
        client = anthropic.AsyncAnthropic(api_key="bench", base_url=fake.url, max_retries=0)
        start = time.perf_counter()
        async with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=1024,
            system="You are a critic. " * 50,
            messages=[{"role": "user", "content": "Review this document about trees. " * 50}],
        ) as stream:
            async for _ in stream.text_stream:
                pass
            await stream.get_final_message()
        return time.perf_counter() - start

    return asyncio.run(run())


def review_step(user, critics: int) -> float:
    """Wall time of engine.run_step for a roundtable review step with `critics` critics."""
    from orchestration import engine, services
    from orchestration.flows import get_policy
    from orchestration.models import Agent, Criterion, Flow, LLMModel, Project, Status, WritingSession

    model = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    project, _ = Project.objects.get_or_create(owner=user, name="Benchmarks")
    session = WritingSession.objects.create(
        project=project,
        title="parallel bench",
        brief="Why cities need trees.",
        document="# Trees\n\nCities need trees because shade cools streets.\n",
        flow=Flow.ROUNDTABLE,
        max_rounds=1,
    )
    roles = ["critic"] * critics + ["moderator"]
    for order, role in enumerate(roles):
        agent = Agent.objects.create(
            session=session, order=order, name=f"{role} {order}", role=role, model=model,
            role_prompt=f"You are {role} {order}.", max_output_tokens=1024,
        )  # fmt: skip
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    services.start_session(session=session, user=user)
    WritingSession.objects.filter(pk=session.pk).update(status=Status.RUNNING, current_round=1)
    session.refresh_from_db()
    owner = engine.new_owner_id()
    assert engine.claim_lease(session.pk, owner)
    step = get_policy(session.flow).next_step(session)
    assert step.phase == "reviewing" and len(step.calls) == critics, step
    start = time.perf_counter()
    result = asyncio.run(engine.run_step(session, step, owner))
    elapsed = time.perf_counter() - start
    engine.release_lease(session.pk, owner)
    # Done measuring: the session must not count against the plan's concurrent runs.
    WritingSession.objects.filter(pk=session.pk).update(status=Status.STOPPED)
    assert len(result.completed_turn_ids) == critics, result
    return elapsed


def main() -> None:
    from django.conf import settings
    from django.db import connection

    import orchestration.tasks
    from orchestration.providers import clear_adapter_cache
    from tests.fakes.llm_server import FakeLLMServer

    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + embedded Redis"
    print(f"# Parallel round — {backend} — {connection.vendor}, runs={RUNS}, reply ~{REPLY_SECONDS:g} s", flush=True)
    setup_database()
    user = make_user()
    from orchestration.models import ACTIVE_STATUSES, Status, WritingSession

    # Sessions left running by an interrupted earlier run would count against the plan's limit.
    WritingSession.objects.filter(project__owner=user, status__in=ACTIVE_STATUSES).update(status=Status.STOPPED)
    orchestration.tasks.enqueue_drive = lambda session_id: None  # this process runs the steps itself
    with FakeLLMServer() as fake:
        paced(fake)
        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)
        clear_adapter_cache()
        bare = [bare_call(fake) for _ in range(RUNS)]
        one = [review_step(user, 1) for _ in range(RUNS)]
        five = [review_step(user, 5) for _ in range(RUNS)]
    one_call = statistics.median(bare)
    print()
    print("| measurement | n | median s | max s | vs one call |")
    print("|---|---|---|---|---|")
    for name, values in [
        ("One bare SDK streaming call", bare),
        ("Engine review step, 1 critic", one),
        ("Engine review step, 5 critics in parallel", five),
    ]:
        print(
            f"| {name} | {len(values)} | {statistics.median(values):.3f} | {max(values):.3f} | "
            f"{statistics.median(values) / one_call:.3f} x |"
        )
    ratio = statistics.median(five) / one_call
    verdict = "meets" if ratio <= 1.1 else "MISSES"
    print(f"\n5 critics in parallel: {ratio:.3f} x one call's wall time ({verdict} the <= 1.1 x target).")


if __name__ == "__main__":
    main()
