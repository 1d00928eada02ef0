"""Streaming cost and latency (issue 15; see docs/benchmarks.md, "Streaming").

    .venv/bin/python bench/streaming.py                 # embedded defaults (SQLite + embedded Redis)
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/streaming.py

1. Statements per second per session while a reply streams: one agent's reply streamed by the fake server
   at 100 chunks/s for ~6 s, the engine driven in this process; every SQL statement it sends is
   timestamped, and those between 1 s after the turn starts and 0.5 s before it ends are counted
   (transaction framing, BEGIN, is not: PostgreSQL's driver sends it with the first statement).
2. Chunk latency provider -> browser WebSocket: the fake server timestamps chunk i as it writes it; a
   WebSocket client connected through daphne (the product path: django-q2 worker -> Redis -> consumer)
   timestamps the fragment that first shows it (bench/harness.py's chunk_latency).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("ATELIER_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "bench-streaming"))

import harness
from django.db.backends.utils import CursorWrapper

CHUNKS_PER_SECOND = 100
REPLY_CHUNKS = 600


def statements_per_second(fake, user) -> tuple[float, float, float]:
    """(statements per second, event rows per second, seconds measured) for one streaming session."""
    import orchestration.tasks
    from orchestration import engine, services
    from orchestration.models import SessionEvent, Turn

    stamps: list[tuple[float, str]] = []
    original = CursorWrapper._execute_with_wrappers

    def counted(self, sql, params, many, executor):
        if not sql.lstrip().upper().startswith("BEGIN"):
            stamps.append((time.time(), sql))
        return original(self, sql, params, many, executor)

    fake.tokens_per_second = CHUNKS_PER_SECOND
    fake.chunk_size = 4
    fake.reply("x" * (4 * REPLY_CHUNKS) + harness.EVALUATION)
    session = harness.make_session(user, fake, rounds=1)
    session.agents.filter(name="Editor").update(active=False)
    orchestration.tasks.enqueue_drive = lambda session_id: None
    services.start_session(session=session, user=user)
    CursorWrapper._execute_with_wrappers = counted
    try:
        engine.drive(session.pk, budget_seconds=3600)
    finally:
        CursorWrapper._execute_with_wrappers = original
    turn = Turn.objects.get(session=session)
    start, end = turn.started_at.timestamp() + 1.0, turn.finished_at.timestamp() - 0.5
    window = [sql for at, sql in stamps if start <= at <= end]
    seconds = end - start
    events = SessionEvent.objects.filter(
        session=session, created_at__gte=turn.started_at, created_at__lte=turn.finished_at
    ).count()
    return len(window) / seconds, events / (turn.finished_at - turn.started_at).total_seconds(), seconds


def main() -> None:
    from django.db import connection

    from tests.fakes.llm_server import FakeLLMServer

    backend = "PostgreSQL + Redis" if connection.vendor == "postgresql" else "SQLite + embedded Redis"
    print(f"# Streaming benchmark — {backend}", flush=True)
    harness.setup_database()
    user = harness.make_user()
    with FakeLLMServer() as fake:
        os.environ.update(harness._provider_env(fake))
        from django.conf import settings

        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)
        from orchestration.providers import clear_adapter_cache

        clear_adapter_cache()
        rate, events, seconds = statements_per_second(fake, user)
        latency = [v * 1000 for v in harness.chunk_latency(fake, user)]
    print()
    print("| measurement | value | target |")
    print("|---|---|---|")
    print(f"| SQL statements per second, one session streaming ({seconds:.1f} s measured) | {rate:.1f} | <= 5 |")
    print(f"| event rows written per second while streaming | {events:.1f} |  |")
    print(
        f"| chunk latency provider -> WebSocket, n={len(latency)}: median / p95 / p99 ms | "
        f"{statistics.median(latency):.1f} / {harness.pct(latency, 95):.1f} / {harness.pct(latency, 99):.1f} | "
        "p99 <= 50 |"
    )


if __name__ == "__main__":
    main()
