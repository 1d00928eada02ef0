"""Conversations (issue 12): what a reply costs beyond the model call, and full-text search at scale.

Side by side in one run, against the wire-level fake server with the real anthropic SDK:
1. bare SDK: one streaming call with no Atelier code around it (the floor);
2. a reply answered by triage (1 call) and a reply handed off to a specialist (2 calls), each driven by
   the conversation runner in-process: wall time per reply, overhead per model call over the bare call,
   and database statements per reply (counted on every connection);
3. search: BENCH_MESSAGES messages over 200 conversations; the database's full-text search (SQLite FTS5 /
   PostgreSQL GIN) against a plain LIKE scan of the same rows: p50 and the ratio.

    .venv/bin/python bench/conversations.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench ATELIER_VAR_DIR=var/bench-pg \\
      .venv/bin/python bench/conversations.py
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-conversations"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench-conversations")

import harness  # noqa: E402 - sets up Django the same way as the other benches

REPLIES = int(os.environ.get("BENCH_REPLIES", "30"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "20000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "100"))
ANSWER = "Urban trees cool streets and calm people. " * 8


class StatementCounter:
    """Counts SQL statements on every connection and thread (the runner works in a worker thread)."""

    def __init__(self) -> None:
        from django.db.backends import utils

        self.count = 0
        self.lock = threading.Lock()
        self.utils = utils
        self.original = utils.CursorWrapper.execute

    def __enter__(self) -> StatementCounter:
        counter = self

        def execute(cursor, sql, params=None):
            with counter.lock:
                counter.count += 1
            return counter.original(cursor, sql, params)

        self.utils.CursorWrapper.execute = execute
        return self

    def __exit__(self, *exc) -> None:
        self.utils.CursorWrapper.execute = self.original


def bare_call(fake) -> float:
    from orchestration.providers import ModelRequest, get_adapter

    async def run() -> None:
        request = ModelRequest(provider="anthropic", model_id="claude-sonnet-4-5", system="You help.", user="Hi")
        async for _ in get_adapter("anthropic").stream(request):
            pass

    fake.reply(ANSWER)
    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def one_reply(conversation, user, fake, *, handoff: bool) -> tuple[float, int]:
    from orchestration.conversations import runner
    from orchestration.conversations import services as conversations

    if handoff:
        fake.reply("", tool_calls=[{"name": "transfer_to_research_specialist", "arguments": {"reason": "sources"}}])
    fake.reply(ANSWER)
    conversations.send_message(conversation=conversation, user=user, text="Where do street trees help most?")
    with StatementCounter() as counter:
        started = time.perf_counter()
        outcome = runner.drive(conversation.session_id)
        seconds = time.perf_counter() - started
    assert outcome == "finished", outcome
    return seconds, counter.count


def search_bench(user) -> tuple[list[float], list[float]]:
    from orchestration.conversations import services as conversations
    from orchestration.conversations.search import terms
    from orchestration.models import Conversation, Message, Project, WritingSession

    rng = random.Random(7)
    vocabulary = ["".join(rng.choice("abcdefghijklmnoprstuvw") for _ in range(rng.randint(4, 9))) for _ in range(3000)]
    project = Project.objects.create(owner=user, name="Search bench")
    per = max(1, MESSAGES // 200)
    for number in range(200):
        run = WritingSession.objects.create(project=project, title=f"c{number}", flow="conversation")
        conversation = Conversation.objects.create(project=project, title=f"Conversation {number}", session=run)
        Message.objects.bulk_create(
            Message(
                conversation=conversation,
                exchange=i // 2 + 1,
                position=i + 1,
                role="user" if i % 2 == 0 else "assistant",
                content=" ".join(rng.choices(vocabulary, k=rng.randint(20, 80))),
            )
            for i in range(per)
        )
    queries = [" ".join(rng.choices(vocabulary, k=2)) for _ in range(QUERIES)]
    fts, scan = [], []
    for query in queries:  # interleaved, so both see the same machine load
        started = time.perf_counter()
        conversations.search(user=user, query=query, project=project)
        fts.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        rows = Message.objects.filter(conversation__project=project, superseded=False)
        for word in terms(query):
            rows = rows.filter(content__icontains=word)
        list(rows.order_by("-created_at")[:50])
        scan.append((time.perf_counter() - started) * 1000)
    return fts, scan


def main() -> None:
    from django.db import connection

    from orchestration.conversations import services as conversations
    from orchestration.models import LLMModel, Project
    from orchestration.providers import clear_adapter_cache
    from tests.fakes.llm_server import FakeLLMServer

    harness.setup_database()
    # The runner is driven in-process below: no task is handed to a (non-existent) worker queue.
    import orchestration.tasks

    orchestration.tasks.enqueue_drive = lambda session_id: None
    user = harness.make_user()
    Project.objects.filter(owner=user).delete()
    fake = FakeLLMServer().start()
    from django.conf import settings

    settings.PROVIDERS = fake.provider_settings()
    clear_adapter_cache()
    model = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    project = Project.objects.create(owner=user, name="Conversation bench")
    bare, answered, handed = [], [], []
    statements = {"answered": [], "handed": []}
    for _ in range(REPLIES):  # a fresh conversation per pair keeps prompts the same size
        conversation = conversations.create_conversation(project=project, user=user)
        conversation.session.agents.update(model=model)
        bare.append(bare_call(fake))
        seconds, count = one_reply(conversation, user, fake, handoff=False)
        answered.append(seconds)
        statements["answered"].append(count)
        time.sleep(1)  # Pro allows 60 messages a minute
        seconds, count = one_reply(conversation, user, fake, handoff=True)
        handed.append(seconds)
        statements["handed"].append(count)
        time.sleep(1)
    fts, scan = search_bench(user)
    fake.stop()
    floor = statistics.median(bare) * 1000
    print(f"database: {connection.vendor}; {REPLIES} replies of each kind; load: {os.getloadavg()[0]:.1f}")
    print(f"bare SDK call: p50 {floor:.1f} ms")
    for label, values, calls in (("answered by triage (1 call)", answered, 1), ("handed off (2 calls)", handed, 2)):
        p50 = statistics.median(values) * 1000
        print(
            f"reply {label}: p50 {p50:.1f} ms, p95 {harness.pct(values, 95) * 1000:.1f} ms; "
            f"overhead per call over the bare call {(p50 - calls * floor) / calls:.1f} ms; "
            f"statements per reply {statistics.median(statements['answered' if calls == 1 else 'handed']):.0f}"
        )
    print(
        f"search over {MESSAGES:,} messages, {QUERIES} two-word queries: full-text p50 {harness.pct(fts, 50):.1f} ms "
        f"(p95 {harness.pct(fts, 95):.1f}); LIKE scan p50 {harness.pct(scan, 50):.1f} ms; "
        f"ratio scan / full-text {harness.pct(scan, 50) / harness.pct(fts, 50):.1f}x"
    )
    Project.objects.filter(owner=user).delete()


if __name__ == "__main__":
    main()
