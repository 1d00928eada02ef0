"""Atelier benchmark harness (see docs/benchmarks.md).

    .venv/bin/python bench/harness.py                 # embedded defaults (SQLite + embedded Redis)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/harness.py             # PostgreSQL + Redis

Measures, against the wire-level fake LLM server (tests/fakes/llm_server.py) with the real SDKs:
1. bare SDK: an Anthropic streaming call with no Atelier code around it (the floor);
2. orchestration overhead per turn, engine in-process: per-turn wall time minus the bare call;
3. the same through the real path: services.start_session -> django-q2 worker process -> engine;
4. chunk latency: the fake provider writing a chunk -> a WebSocket client (through daphne) receiving it.
Prints a Markdown table; docs/benchmarks.md records the results and this command.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench")
os.environ.setdefault("ACCOUNT_RATE_LIMITS_ENABLED", "0")
os.environ.setdefault("DJANGO_DEBUG", "0")  # measure as in production: no query logging

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

TURNS = int(os.environ.get("BENCH_TURNS", "50"))  # Pro allows 25 rounds x 2 agents
BARE_CALLS = int(os.environ.get("BENCH_BARE_CALLS", "100"))
REPLY = "# Trees\n\n" + "Urban trees cool streets and calm people. " * 10
EVALUATION = '\n<evaluation>{"scores": {"Clarity": 6}, "feedback": "ok"}</evaluation>'


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def setup_database() -> None:
    call_command("migrate", verbosity=0)
    from orchestration.catalogue import seed_catalogue

    seed_catalogue()


def make_user():
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    from billing.plans import PRO
    from billing.services import get_account, grant_credits

    user, _ = get_user_model().objects.get_or_create(
        username="bench@example.com", defaults={"email": "bench@example.com"}
    )
    EmailAddress.objects.get_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=10_000_000, key=f"bench:{time.time_ns()}", description="benchmark credits")
    return user


def make_session(user, fake, *, rounds: int, provider: str = "anthropic", model_id: str = "claude-sonnet-4-5"):
    from orchestration.models import Agent, Criterion, LLMModel, Project, WritingSession

    model = LLMModel.objects.get(provider=provider, model_id=model_id)
    project, _ = Project.objects.get_or_create(owner=user, name="Benchmarks")
    session = WritingSession.objects.create(
        project=project, title="bench", brief="Why cities need trees.", max_rounds=rounds
    )
    for order, name in enumerate(["Writer", "Editor"]):
        agent = Agent.objects.create(
            session=session, order=order, name=name, model=model, role_prompt="Write.", max_output_tokens=512
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def per_turn_seconds(session, started_at: float) -> list[float]:
    """Wall time of each turn, everything included: from the previous turn's end to this one's."""
    from orchestration.models import Turn

    ends = [started_at] + [
        f.timestamp()
        for f in Turn.objects.filter(session=session, status="completed")
        .order_by("finished_at")
        .values_list("finished_at", flat=True)
    ]
    return [b - a for a, b in itertools.pairwise(ends)][1:]  # the first interval includes start-up


def bare_sdk_calls(fake) -> list[float]:
    import anthropic

    async def run() -> list[float]:
        client = anthropic.AsyncAnthropic(api_key="bench", base_url=fake.url, max_retries=0)
        durations = []
        for _ in range(BARE_CALLS):
            fake.reply(REPLY + EVALUATION)
            start = time.perf_counter()
            async with client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=512,
                system="You are the writer. " * 50,
                messages=[{"role": "user", "content": "Write about trees. " * 50}],
            ) as stream:
                async for _ in stream.text_stream:
                    pass
                await stream.get_final_message()
            durations.append(time.perf_counter() - start)
        return durations

    return asyncio.run(run())


def engine_in_process(fake, user) -> list[float]:
    from orchestration import engine, services

    fake.reply(*[REPLY + f" rev {i}" + EVALUATION for i in range(TURNS)])
    session = make_session(user, fake, rounds=TURNS // 2)
    import orchestration.tasks

    original = orchestration.tasks.enqueue_drive
    orchestration.tasks.enqueue_drive = lambda session_id: None  # drive it here, not in a worker
    try:
        services.start_session(session=session, user=user)
        t0 = time.time()
        engine.drive(session.pk, budget_seconds=3600)
    finally:
        orchestration.tasks.enqueue_drive = original
    session.refresh_from_db()
    assert session.status == "completed", session.stop_detail
    return per_turn_seconds(session, t0)


def engine_via_worker(fake, user) -> tuple[list[float], float, float]:
    from orchestration import services
    from orchestration.models import Turn, WritingSession
    from tests.live import start_worker, wait_for

    worker = start_worker(**_provider_env(fake))
    try:
        # Warm up: the cluster boots and a first tiny session runs, so pickup is measured warm.
        fake.reply(*[REPLY + EVALUATION] * 2)
        warm = make_session(user, fake, rounds=1)
        services.start_session(session=warm, user=user)
        wait_for(lambda: WritingSession.objects.get(pk=warm.pk).status == "completed", timeout=120, interval=0.05)
        fake.reply(*[REPLY + f" rev {i}" + EVALUATION for i in range(TURNS)])
        session = make_session(user, fake, rounds=TURNS // 2)
        t0 = time.time()
        services.start_session(session=session, user=user)
        wait_for(lambda: WritingSession.objects.get(pk=session.pk).status == "completed", timeout=600, interval=0.05)
        total = time.time() - t0
        first = Turn.objects.filter(session=session).order_by("pk").first()
        pickup = first.started_at.timestamp() - t0
        return per_turn_seconds(session, t0), pickup, total
    finally:
        worker.stop()


def _provider_env(fake) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": fake.url, "OPENAI_API_KEY": "bench",
            "OPENAI_BASE_URL": fake.openai_url, "ACCOUNT_RATE_LIMITS_ENABLED": "0"}  # fmt: skip


def chunk_latency(fake, user) -> list[float]:
    """Provider writes chunk i (timestamped in the fake) -> WebSocket client sees marker i."""
    import websockets
    from django.contrib.sessions.backends.db import SessionStore

    from orchestration import services
    from tests.live import start_web, start_worker

    emitted: dict[int, float] = {}
    handler = fake._httpd.RequestHandlerClass
    original_write = handler._write_chunk

    def timed_write(self, event: str) -> None:
        original_write(self, event)
        for match in re.finditer(r"w(\d{5})", event):
            emitted.setdefault(int(match.group(1)), time.time())

    handler._write_chunk = timed_write
    fake.chunk_size = 7  # one "w00001 " marker per chunk
    fake.tokens_per_second = 50
    markers = 200
    text = "".join(f"w{i:05d} " for i in range(markers))
    fake.reply(text + EVALUATION, text.replace("w", "v") + EVALUATION)

    env = _provider_env(fake)
    worker = start_worker(**env)
    web, url = start_web(**env)
    received: dict[int, float] = {}
    try:
        store = SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.create()
        session = make_session(user, fake, rounds=1)
        session.agents.filter(name="Editor").update(active=False)

        async def listen() -> None:
            ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session.pk}/"
            headers = {"Cookie": f"sessionid={store.session_key}", "Origin": url}
            async with websockets.connect(ws_url, additional_headers=headers) as socket:
                await socket.send(json.dumps({"type": "catch_up", "after": 0}))
                threading.Thread(target=lambda: services.start_session(session=session, user=user)).start()
                async with asyncio.timeout(120):
                    while len(received) < markers:
                        message = json.loads(await socket.recv())
                        now = time.time()
                        for fragment in message.get("fragments", []):
                            for match in re.finditer(r"w(\d{5})", fragment.get("html", "")):
                                received.setdefault(int(match.group(1)), now)

        time.sleep(3)
        asyncio.run(listen())
    finally:
        handler._write_chunk = original_write
        web.stop()
        worker.stop()
    return [received[i] - emitted[i] for i in received if i in emitted]


def main() -> None:
    from tests.fakes.llm_server import FakeLLMServer

    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + embedded Redis"
    print(f"# Atelier benchmark — {backend} — {connection.vendor}, turns={TURNS}", flush=True)
    setup_database()
    user = make_user()
    with FakeLLMServer() as fake:
        os.environ.update(_provider_env(fake))
        from django.conf import settings

        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)
        settings.PROVIDERS["openai"].update(api_key="bench", base_url=fake.openai_url)
        from orchestration.providers import clear_adapter_cache

        clear_adapter_cache()
        bare = bare_sdk_calls(fake)
        bare_median = statistics.median(bare)
        rows = [("Bare SDK streaming call (floor)", bare, None)]
        in_process = engine_in_process(fake, user)
        rows.append(("Engine in-process: turn wall time", in_process, None))
        rows.append(("Engine in-process: overhead per turn", [t - bare_median for t in in_process], 25))
        via_worker, pickup, total = engine_via_worker(fake, user)
        rows.append(("Via django-q2 worker: turn wall time", via_worker, None))
        rows.append(("Via django-q2 worker: overhead per turn", [t - bare_median for t in via_worker], 25))
        latency = chunk_latency(fake, user)
        rows.append(("Chunk latency provider -> WebSocket client", latency, 150))
    print()
    print("| measurement | n | median ms | p95 ms | p99 ms | target |")
    print("|---|---|---|---|---|---|")
    for name, values, target in rows:
        ms = [v * 1000 for v in values]
        goal = f"<= {target} ms" if target else ""
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {pct(ms, 95):.1f} | {pct(ms, 99):.1f} | {goal} |")
    print(
        f"\nQueue pickup (start -> first turn begins, via worker): {pickup * 1000:.0f} ms; "
        f"whole {TURNS}-turn run via worker: {total:.2f} s ({total / TURNS * 1000:.1f} ms per turn)"
    )


if __name__ == "__main__":
    main()
