"""The writer/editor workload in Atelier's engine, run with the app's venv (see run.py).

    .venv/bin/python bench/peers/atelier_peer.py          # embedded defaults (SQLite + embedded Redis)
    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/peers/atelier_peer.py

A two-agent sequential session (Writer, Editor) of ROUNDS rounds on gpt-4.1 through the real
OpenAI adapter, driven in this process by engine.drive: every call is a durable turn (credits
reserved and settled, the turn saved once, a document version, numbered events pushed to the
channel layer). The baseline is the plain AsyncOpenAI SDK doing the same 20 streamed calls.
Also prints the SQL statements the engine issued per call (counted on its worker thread), and the milliseconds per
call spent in them (the driver, the round trip and the database's work: what a faster statement shape can save).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-peers"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench-peers")
os.environ.setdefault("ACCOUNT_RATE_LIMITS_ENABLED", "0")
os.environ.setdefault("DJANGO_DEBUG", "0")  # as in production: no query logging

import django  # noqa: E402

django.setup()

import openai  # noqa: E402
from common import CALLS, MODEL, ROUNDS, base_url, editor_messages, measure, writer_messages  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402


async def stream(client: openai.AsyncOpenAI, messages: list[dict]) -> str:
    parts = []
    response = await client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}, max_tokens=512
    )
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


async def _baseline() -> None:
    # A client per event loop (asyncio.run closes its loop), as the engine's adapters have one per drive.
    async with openai.AsyncOpenAI(api_key="bench", base_url=base_url(), max_retries=0) as client:
        document = notes = ""
        for _ in range(ROUNDS):
            document = await stream(client, writer_messages(document, notes))
            notes = await stream(client, editor_messages(document))


def baseline() -> None:
    asyncio.run(_baseline())


def make_user():
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    from billing.plans import PRO
    from billing.services import get_account, grant_credits

    user, _ = get_user_model().objects.get_or_create(
        username="peers@example.com", defaults={"email": "peers@example.com"}
    )
    EmailAddress.objects.get_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=100_000_000, key=f"peers:{time.time_ns()}", description="benchmark credits")
    return user


def make_session(user):
    from orchestration.models import Agent, Criterion, LLMModel, Project, WritingSession

    model = LLMModel.objects.get(provider="openai", model_id=MODEL)
    project, _ = Project.objects.get_or_create(owner=user, name="Peers benchmark")
    session = WritingSession.objects.create(
        project=project, title="peers", brief="Why cities need trees.", max_rounds=ROUNDS
    )
    for order, (name, prompt) in enumerate([("Writer", "Write and revise."), ("Editor", "Critique and improve.")]):
        agent = Agent.objects.create(
            session=session, order=order, name=name, model=model, role_prompt=prompt, max_output_tokens=512
        )
        Criterion.objects.create(agent=agent, name="Quality", weight=1)
    return session


class StatementCounter:
    """Counts the SQL statements run on the engine's database thread (every connection, via a wrapper), and the
    time spent in them: the driver's call, the round trip and the database's own work (seconds)."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


def main() -> None:
    from django.db import connections

    import orchestration.tasks
    from orchestration import engine, services
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import Turn, WritingSession
    from orchestration.providers import clear_adapter_cache

    call_command("migrate", verbosity=0)
    seed_catalogue()
    settings.PROVIDERS["openai"].update(api_key="bench", base_url=base_url())
    clear_adapter_cache()
    user = make_user()
    orchestration.tasks.enqueue_drive = lambda session_id: None  # driven here, not by a worker
    counter = StatementCounter()
    counted = {"statements": 0, "runs": 0, "seconds": 0.0}

    def framework() -> float:
        session = make_session(user)  # writing the team is not part of running it
        start = time.perf_counter()
        services.start_session(session=session, user=user)
        before, seconds_before = counter.count, counter.seconds
        engine.drive(session.pk, budget_seconds=3600)
        elapsed = time.perf_counter() - start
        counted["statements"] += counter.count - before
        counted["seconds"] += counter.seconds - seconds_before
        counted["runs"] += 1
        status = WritingSession.objects.get(pk=session.pk).status
        done = Turn.objects.filter(session=session, status="completed").count()
        assert status == "completed" and done == CALLS, (status, done)
        return elapsed

    # Count on every connection the engine's worker thread opens (sync_to_async reuses one thread).
    from django.db.backends.signals import connection_created

    def instrument(sender, connection, **kwargs):
        connection.execute_wrappers.append(counter)

    connection_created.connect(instrument)
    for conn in connections.all():
        conn.close()
    backend = (
        "PostgreSQL + Redis" if connection.vendor == "postgresql" else "embedded defaults (SQLite + embedded Redis)"
    )
    result = measure(f"Atelier, {backend}", baseline, framework)
    calls = counted["runs"] * CALLS
    figures = {"per_call": counted["statements"] / calls, "db_ms_per_call": counted["seconds"] * 1000 / calls}
    print("STATEMENTS " + json.dumps({"framework": result["framework"], **figures}), flush=True)


if __name__ == "__main__":
    main()
