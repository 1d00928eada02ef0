"""Crash benchmark: SIGKILL the django-q2 worker mid-stream, again and again (see docs/benchmarks.md).

    .venv/bin/python bench/crash.py                      # 20 kills, embedded defaults (SQLite + embedded Redis)
    BENCH_SCENARIO=standby .venv/bin/python bench/crash.py   # two workers on two "machines"
    BENCH_KILLS=5 .venv/bin/python bench/crash.py        # fewer
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/crash.py                  # PostgreSQL + Redis

Sessions (two agents, real Anthropic SDK against the wire-level fake server streaming ~40 chunks a
second) run in a real `manage.py qcluster`. Each round of the benchmark waits until a turn is
streaming, SIGKILLs the whole process group of the worker driving it, restarts that worker one
second later (what `manage.py up` does) and measures, for every session that was streaming, the time from the kill
to its next streamed token (the first chunk event saved after the kill). New sessions are started
as others finish, so the kills land across several sessions. At the end every session must be
terminal, no turn saved twice (one completed turn per round and agent) and no turn charged twice
(one settlement per turn; the ledger, the turns and the session totals agree).
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-crash"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench-crash")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402 - sets up Django (settings, django.setup()) the same way

KILLS = int(os.environ.get("BENCH_KILLS", "20"))
CONCURRENT = int(os.environ.get("BENCH_SESSIONS", "3"))  # sessions streaming at once
ROUNDS = 4
RESTART_DELAY = 1.0  # `manage.py up` restarts a dead process after 1 s
SCENARIO = os.environ.get("BENCH_SCENARIO", "restart")  # restart | standby (see main)
REPLY = "# Trees\n\n" + "Urban trees cool streets, clean the air and calm people. " * 12
EVALUATION = '\n<evaluation>{"scores": {"Clarity": 7}, "feedback": "Tighter."}</evaluation>'


def cluster_started_at(worker) -> float:
    """When the worker's django-q2 cluster logged that it runs (its log is in local time)."""
    from datetime import datetime

    from tests.live import wait_for

    match = wait_for(lambda: re.search(r"^(\S+ \S+) INFO django-q: Q Cluster .* running", worker.log(), re.M), 120)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def make_user():
    """A fresh Pro user per run: sessions an interrupted earlier run left active do not count against its plan."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    from billing.plans import PRO
    from billing.services import get_account, grant_credits

    email = f"crash-{time.time_ns()}@example.com"
    user = get_user_model().objects.create_user(username=email, email=email)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=10_000_000, key=f"bench:{email}", description="benchmark credits")
    return user


def main() -> int:
    from django.db.models import Count, Sum

    from billing.models import CreditEntry
    from billing.services import get_balance
    from orchestration import services
    from orchestration.models import ACTIVE_STATUSES, SessionEvent, Turn, WritingSession
    from tests.fakes.llm_server import FakeLLMServer
    from tests.live import start_worker, wait_for

    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + embedded Redis"
    print(f"# Atelier crash benchmark — {backend} — {SCENARIO}: {KILLS} SIGKILLs of a worker mid-stream", flush=True)
    harness.setup_database()
    user = make_user()
    sessions: list[int] = []
    with FakeLLMServer() as fake:
        from django.conf import settings

        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)  # for start validation here
        fake.tokens_per_second = 40
        fake.reply(*[REPLY + f"rev {i}" + EVALUATION for i in range(5000)])
        env = {**harness._provider_env(fake), "Q_WORKERS": str(CONCURRENT + 1)}

        def top_up() -> None:
            active = WritingSession.objects.filter(pk__in=sessions, status__in=ACTIVE_STATUSES).count()
            for _ in range(CONCURRENT - active):
                session = harness.make_session(user, fake, rounds=ROUNDS)
                services.start_session(session=session, user=user)
                sessions.append(session.pk)

        def streaming_now() -> dict[int, int]:
            """Sessions with a turn streaming that has already sent text: {session id: its last seq}."""
            live = Turn.objects.filter(session_id__in=sessions, status=Turn.TurnStatus.STREAMING)
            with_text = (
                SessionEvent.objects.filter(turn__in=live, kind="chunk")
                .values("session_id")
                .annotate(n=Count("id"))
                .filter(n__gte=5)
            )
            ids = [row["session_id"] for row in with_text]
            return dict(WritingSession.objects.filter(pk__in=ids).values_list("pk", "last_seq"))

        scenario = SCENARIO
        # restart: one worker, restarted after a kill (as `manage.py up` does): recovery waits for its boot.
        # standby: two workers on two "machines"; the one holding the streaming sessions is killed, the
        # other takes them over once their lease expires; the killed one restarts after 1 s.
        names = ["a"] if scenario == "restart" else ["a", "b"]
        workers = {name: start_worker(**env, ENGINE_MACHINE_ID=f"bench-{name}") for name in names}
        recoveries: list[float] = []  # kill -> next token, per session streaming at the kill
        worst_per_kill: list[float] = []
        boots: list[float] = []
        try:
            for kill in range(1, KILLS + 1):
                top_up()
                victims = wait_for(streaming_now, timeout=120, interval=0.05, message="a turn streaming")
                owners = dict(WritingSession.objects.filter(pk__in=victims).values_list("pk", "lease_owner"))
                name = next((n for n in names if any(o.startswith(f"bench-{n}:") for o in owners.values())), "a")
                victims = {pk: seq for pk, seq in victims.items() if owners[pk].startswith(f"bench-{name}:")}
                killed_at = time.time()
                workers[name].kill_group()
                # Where each victim stood once its worker was dead: a batch flushed just before the kill is not "next".
                victims = dict(WritingSession.objects.filter(pk__in=victims).values_list("pk", "last_seq"))
                time.sleep(RESTART_DELAY)
                workers[name] = start_worker(**env, ENGINE_MACHINE_ID=f"bench-{name}")
                pending = dict(victims)
                times: dict[int, float] = {}
                deadline = time.monotonic() + 120
                while pending and time.monotonic() < deadline:
                    for session_id, seq in list(pending.items()):
                        first = (
                            SessionEvent.objects.filter(session_id=session_id, kind="chunk", seq__gt=seq)
                            .order_by("seq")
                            .values_list("created_at", flat=True)
                            .first()
                        )
                        if first is not None:
                            times[session_id] = first.timestamp() - killed_at
                            del pending[session_id]
                    time.sleep(0.05)
                if pending:
                    print(f"kill {kill}: no token within 120 s for sessions {sorted(pending)}", flush=True)
                    return 1
                boot = cluster_started_at(workers[name]) - killed_at
                boots.append(boot)
                recoveries += times.values()
                worst_per_kill.append(max(times.values()))
                print(
                    f"kill {kill:2d} (worker {name}): {len(times)} session(s) streaming; next token after "
                    + ", ".join(f"{t:.1f} s" for t in sorted(times.values()))
                    + f"; restarted worker up after {boot:.1f} s",
                    flush=True,
                )
            wait_for(
                lambda: not WritingSession.objects.filter(pk__in=sessions, status__in=ACTIVE_STATUSES).exists(),
                timeout=600,
                interval=0.2,
                message="every session to finish",
            )
        finally:
            for worker in workers.values():
                worker.stop()

    # Every session terminal; no turn saved or charged twice; the money adds up.
    problems: list[str] = []
    statuses = Counter(WritingSession.objects.filter(pk__in=sessions).values_list("status", flat=True))
    if set(statuses) != {"completed"}:
        problems.append(f"sessions not all completed: {dict(statuses)}")
    turns = list(Turn.objects.filter(session_id__in=sessions))
    completed = Counter((t.session_id, t.round, t.agent_id) for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    if any(n > 1 for n in completed.values()):
        problems.append("a turn was saved twice")
    if len(completed) != len(sessions) * ROUNDS * 2:
        problems.append(f"{len(completed)} completed turns, expected {len(sessions) * ROUNDS * 2}")
    if stuck := [t.pk for t in turns if t.status == Turn.TurnStatus.STREAMING]:
        problems.append(f"turns left streaming: {stuck}")
    keys = [f"turn:{t.pk}:settle" for t in turns]
    settled = Counter(CreditEntry.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True))
    if any(n > 1 for n in settled.values()):
        problems.append("a turn was charged twice")
    for session in WritingSession.objects.filter(pk__in=sessions):
        charged = sum(t.credits for t in turns if t.session_id == session.pk)
        if charged != session.credits_used:
            problems.append(f"session {session.pk}: turns charged {charged}, session says {session.credits_used}")
    ledger = CreditEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"]
    if ledger != get_balance(user):
        problems.append(f"ledger total {ledger} != balance {get_balance(user)}")
    interrupted = sum(1 for t in turns if t.status == Turn.TurnStatus.INCOMPLETE)

    print()
    print("| measurement | n | median s | p95 s | max s | target |")
    print("|---|---|---|---|---|---|")
    for name, values, target in [
        ("Kill -> next token, per session streaming at the kill", recoveries, "median < 15 s"),
        ("Kill -> next token, slowest session of each kill", worst_per_kill, "median < 15 s"),
        ("Kill -> restarted worker's cluster running (1 s delay + boot)", boots, ""),
    ]:
        print(
            f"| {name} | {len(values)} | {statistics.median(values):.1f} | {harness.pct(values, 95):.1f} "
            f"| {max(values):.1f} | {target} |"
        )
    print(
        f"\n{KILLS} kills across {len(sessions)} sessions ({sum(statuses.values())} finished: {dict(statuses)}); "
        f"{len(turns)} turns, {interrupted} of them interrupted attempts; "
        + ("no turn saved or charged twice, ledger and totals agree." if not problems else "PROBLEMS:")
    )
    for problem in problems:
        print(f"- {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
