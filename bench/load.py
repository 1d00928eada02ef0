"""Load run in the production topology (issue 15; see docs/benchmarks.md, "Issue 15: production topology").

    # PostgreSQL + Redis: 200 sessions, 2 daphne + 2 qcluster processes, each one django-q2 process hosting them
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/h4 REDIS_URL=redis://127.0.0.1:6379/4 Q_CLUSTER_NAME=atelier-h4 \\
        ENGINE_SESSIONS_PER_WORKER=128 BENCH_SESSIONS=200 .venv/bin/python bench/load.py
    # embedded defaults (SQLite + embedded Redis)
    BENCH_SESSIONS=20 .venv/bin/python bench/load.py

Every process is real and local (127.0.0.1 only): two web processes (`daphne atelier.asgi:application`,
as `manage.py up` starts it) and two worker processes (`manage.py qcluster`, each with
BENCH_Q_WORKERS django-q2 processes: one session streams per django-q2 process, or up to
ENGINE_SESSIONS_PER_WORKER per process with the session host on, BENCH_Q_WORKERS then 1 by default), the wire-level fake
provider (tests/fakes/llm_server.py) in its own process, streaming BENCH_CHUNKS_PER_SECOND chunks a
second, one unique marker per chunk ("k00042m017 ") so each chunk's write can be matched with its arrival.
Each session (two agents, one round: a writer turn and an editor turn) is watched by a real WebSocket
client on the live page's socket (half on each web process), connected before the session starts; it
records every message, its sequence position and when each marker first shows.

Reported:
- lost / duplicated events: the client's sequence positions must only grow, its last one must equal the
  session's last event; the database's event log must be gapless (1..last_seq, no repeats); every marker
  of every completed turn must have reached the client, and each turn's saved text holds each of its
  markers exactly once, in order;
- queue pickup: start_session returned (the drive task is enqueued) -> the first turn's started_at;
- chunk latency: the fake writing marker i -> the client first seeing it (n = every marker seen live);
- sessions / turns completed, errors; the load average; the CPU seconds the worker processes (with their
  django-q2 processes) and the web processes used during the run (the same work in every run: comparable
  when the load average is not), and what this process (its WebSocket clients) and the fake provider used, so
  a run shows how much of the 2-core box the measuring side took; RSS (VmRSS and PSS from /proc/<pid>/smaps_rollup)
  of a web process and of a worker (qcluster tree) at idle and at the peak of the run; on PostgreSQL the
  connections in pg_stat_activity per process kind (PGAPPNAME), at idle and at the peak.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-load"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench-load")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SESSIONS = int(os.environ.get("BENCH_SESSIONS", "20"))
Q_WORKERS = int(os.environ.get("BENCH_Q_WORKERS", "0"))  # per qcluster; 0: enough for every session at once
CHUNKS_PER_SECOND = float(os.environ.get("BENCH_CHUNKS_PER_SECOND", "20"))
MARKERS = int(os.environ.get("BENCH_MARKERS", "60"))  # chunks per reply: 3 s a turn at 20 chunks/s
WEB_PROCESSES = 2
WORKER_PROCESSES = 2
EVALUATION = '\n<evaluation>{"scores": {"Clarity": 7}, "feedback": "ok"}</evaluation>'
MARKER = re.compile(r"k(\d{5})m(\d{3})")


# --- the fake provider, in its own process (its stream pacing must not wait on this process's GIL) -----


def _fake_provider(conn) -> None:
    """Serve replies made of unique markers; record when each marker is written; hand the record back."""
    import itertools

    from tests.fakes.llm_server import FakeLLMServer

    counter = itertools.count(1)
    lock = threading.Lock()
    emitted: dict[tuple[int, int], float] = {}

    def markers(request) -> str:
        with lock:
            k = next(counter)
        return "".join(f"k{k:05d}m{i:03d} " for i in range(MARKERS)) + EVALUATION

    server = FakeLLMServer()
    server.tokens_per_second = CHUNKS_PER_SECOND
    server.chunk_size = 11  # one "k00001m001 " marker per chunk
    server.default_reply = markers
    handler = server._httpd.RequestHandlerClass
    original = handler._write_chunk

    def timed_write(self, data: str) -> None:
        original(self, data)
        now = time.time()
        for match in MARKER.finditer(data):
            emitted.setdefault((int(match.group(1)), int(match.group(2))), now)

    handler._write_chunk = timed_write
    server.start()
    conn.send(server.port)
    conn.recv()  # "dump"
    conn.send(dict(emitted))
    server.stop()


# --- processes, memory, connections ---------------------------------------------------------------------


def _memory(pid: int) -> tuple[float, float]:
    """(VmRSS MiB, Pss MiB) of one process; zeros if it is gone."""
    try:
        rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
        pss = int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1))
    except (OSError, AttributeError):
        return 0.0, 0.0
    return rss / 1024, pss / 1024


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds these processes have used so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def cpu_of(webs, workers) -> tuple[float, float]:
    """(CPU seconds of the web processes, of the worker processes with every django-q2 process under them)."""
    from tests.live import process_tree

    web = _cpu_seconds([w.proc.pid for w in webs])
    return web, _cpu_seconds([pid for w in workers for pid in process_tree(w.proc.pid)])


class Sampler(threading.Thread):
    """Samples memory, the load average and PostgreSQL connections every second while the run goes."""

    def __init__(self, webs, workers) -> None:
        super().__init__(daemon=True)
        self.webs, self.workers = webs, workers
        self.stop_event = threading.Event()
        self.samples: list[dict] = []

    def sample(self) -> dict:
        from tests.live import process_tree  # Django is set up by now (tests.live reads its settings)

        web = _memory(self.webs[0].proc.pid)
        tree = process_tree(self.workers[0].proc.pid)
        leader = _memory(self.workers[0].proc.pid)
        # The django-q2 process that drives sessions: the largest child of the cluster.
        child = max((_memory(pid) for pid in tree[1:]), default=(0.0, 0.0))
        cluster_pss = sum(_memory(pid)[1] for pid in tree)
        return {
            "web_rss": web[0],
            "web_pss": web[1],
            "leader_rss": leader[0],
            "child_rss": child[0],
            "child_pss": child[1],
            "cluster_pss": cluster_pss,
            "cluster_processes": len(tree),
            "load": os.getloadavg()[0],
            "connections": _pg_connections(),
        }

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            self.samples.append(self.sample())


def _pg_connections() -> dict[str, int]:
    """PostgreSQL backends connected to this database, by application name (PGAPPNAME of each process)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return {}
    import psycopg

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
        password=db["PASSWORD"] or None, application_name="bench-sampler",
    ) as conn:  # fmt: skip
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1", [db["NAME"]]
        ).fetchall()
    return {name: n for name, n in rows if name != "bench-sampler"}


# --- the WebSocket clients ---------------------------------------------------------------------------------


class Watch:
    """What one session's WebSocket client saw."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.positions: list[int] = []  # last_seq of every message that carried saved events
        self.seen: dict[tuple[int, int], float] = {}
        self.status = ""
        self.errors: list[str] = []
        self.messages = 0
        self.trace: list[tuple] = []


async def watch(url: str, cookie: str, w: Watch, ready: asyncio.Event, deadline: float) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{w.session_id}/"
    try:
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": cookie, "Origin": url}, open_timeout=60, max_size=2**24
        ) as socket:
            await socket.send(json.dumps({"type": "catch_up", "after": 0}))
            first = True
            while time.time() < deadline:
                try:
                    raw = await asyncio.wait_for(socket.recv(), timeout=max(0.1, deadline - time.time()))
                except TimeoutError:
                    break
                now = time.time()
                message = json.loads(raw)
                w.messages += 1
                if message.get("type") == "error":
                    w.errors.append(message.get("error", ""))
                    continue
                if first:
                    first = False
                    ready.set()
                if not message.get("live"):
                    w.positions.append(int(message.get("last_seq", 0)))
                    w.trace.append(
                        (round(now, 3), message.get("last_seq"), message.get("status"), message.get("worker"))
                    )
                for fragment in message.get("fragments", []):
                    for match in MARKER.finditer(fragment.get("html", "")):
                        w.seen.setdefault((int(match.group(1)), int(match.group(2))), now)
                # The header reads the session row, so "completed" can show before the final status
                # event's own push: read on until the socket has brought the page to the log's end.
                if message.get("status") in TERMINAL and w.positions:
                    w.status = message["status"]
                    if w.positions[-1] >= await asyncio.to_thread(_last_seq, w.session_id):
                        break
    except Exception as error:  # noqa: BLE001 - reported, the run goes on
        w.errors.append(f"{type(error).__name__}: {error}")
        ready.set()


def _last_seq(session_id: int) -> int:
    from django.db import connection

    from orchestration.models import WritingSession

    try:
        return WritingSession.objects.values_list("last_seq", flat=True).get(pk=session_id)
    finally:
        connection.close()


TERMINAL = {"completed", "failed", "stopped"}


# --- the run --------------------------------------------------------------------------------------------------


def main() -> int:
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe()
    fake_process = ctx.Process(target=_fake_provider, args=(child_conn,), daemon=True)
    fake_process.start()  # before Django opens anything that must not be shared with a fork
    port = parent_conn.recv()

    import harness  # sets up Django
    from django.conf import settings
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection

    from orchestration import services
    from orchestration.models import SessionEvent, Turn, WritingSession
    from tests.live import start_web, start_worker, wait_for

    backend = "PostgreSQL + Redis" if connection.vendor == "postgresql" else "SQLite + embedded Redis"
    # With the session host on (ENGINE_SESSIONS_PER_WORKER > 1) one django-q2 process per qcluster drives many.
    hosted = settings.ENGINE_SESSIONS_PER_WORKER
    q_workers = Q_WORKERS or (1 if hosted > 1 else max(1, -(-SESSIONS // WORKER_PROCESSES)))
    print(
        f"# Load run — {backend} — {SESSIONS} sessions, {WEB_PROCESSES} web + {WORKER_PROCESSES} worker processes "
        f"(Q_WORKERS={q_workers} each, ENGINE_SESSIONS_PER_WORKER={hosted}), {CHUNKS_PER_SECOND:g} chunks/s, "
        f"{MARKERS} chunks a reply",
        flush=True,
    )
    harness.setup_database()
    fake_url = f"http://127.0.0.1:{port}"
    env = {
        "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": fake_url, "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": fake_url + "/v1", "ACCOUNT_RATE_LIMITS_ENABLED": "0", "DJANGO_DEBUG": "0",
    }  # fmt: skip
    settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake_url)

    class FakeRef:  # harness.make_session only reads nothing from it
        url = fake_url

    users, sessions, cookies = [], [], {}
    for _ in range(SESSIONS):
        user = _make_user(harness)
        session = harness.make_session(user, FakeRef, rounds=1)
        store = SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.create()
        users.append(user)
        sessions.append(session)
        cookies[session.pk] = f"sessionid={store.session_key}"
    connection.close()

    webs, urls, workers = [], [], []
    for _ in range(WEB_PROCESSES):
        web, url = start_web(**env, PGAPPNAME="atelier-web")
        webs.append(web)
        urls.append(url)
    for i in range(WORKER_PROCESSES):
        workers.append(
            start_worker(**env, Q_WORKERS=str(q_workers), PGAPPNAME="atelier-worker", ENGINE_MACHINE_ID=f"load-{i}")
        )
    problems: list[str] = []
    try:
        wait_for(lambda: all(re.search(r"Q Cluster .* running", w.log()) for w in workers), 180, 0.5, "clusters up")
        time.sleep(3)  # let the clusters settle before the idle sample
        sampler = Sampler(webs, workers)
        idle = sampler.sample()
        print(f"idle: {idle}", flush=True)
        sampler.start()
        cpu_before = cpu_of(webs, workers)
        bench_cpu_before = _cpu_seconds([os.getpid()]), _cpu_seconds([fake_process.pid])

        watches = {s.pk: Watch(s.pk) for s in sessions}
        enqueued: dict[int, float] = {}
        deadline = time.time() + float(os.environ.get("BENCH_TIMEOUT", "600"))

        async def run_all() -> None:
            readies = {pk: asyncio.Event() for pk in watches}
            tasks = [
                asyncio.create_task(watch(urls[i % WEB_PROCESSES], cookies[pk], watches[pk], readies[pk], deadline))
                for i, pk in enumerate(watches)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies.values())), 120)

            def start_all() -> None:
                for session, user in zip(sessions, users, strict=True):
                    services.start_session(session=session, user=user)
                    enqueued[session.pk] = time.time()
                connection.close()

            await asyncio.to_thread(start_all)
            await asyncio.gather(*tasks)

        t0 = time.time()
        asyncio.run(run_all())
        wall = time.time() - t0
        cpu_after = cpu_of(webs, workers)
        bench_cpu = (
            _cpu_seconds([os.getpid()]) - bench_cpu_before[0],
            _cpu_seconds([fake_process.pid]) - bench_cpu_before[1],
        )
        sampler.stop_event.set()
        sampler.join()
        parent_conn.send("dump")
        emitted: dict[tuple[int, int], float] = parent_conn.recv()
    finally:
        for process in [*webs, *workers]:
            process.stop()
        fake_process.join(timeout=10)

    # --- checks against the database -----------------------------------------------------------------------
    ids = [s.pk for s in sessions]
    statuses = Counter(WritingSession.objects.filter(pk__in=ids).values_list("status", flat=True))
    last_seq = dict(WritingSession.objects.filter(pk__in=ids).values_list("pk", "last_seq"))
    seqs: dict[int, list[int]] = {}
    for session_id, seq in SessionEvent.objects.filter(session_id__in=ids).values_list("session_id", "seq"):
        seqs.setdefault(session_id, []).append(seq)
    turns = list(Turn.objects.filter(session_id__in=ids).values("session_id", "status", "output_text", "started_at"))
    completed_turns = [t for t in turns if t["status"] == "completed"]
    lost_events = duplicated_events = 0
    client_problems = 0
    for pk in ids:
        got = sorted(seqs.get(pk, []))
        duplicated_events += len(got) - len(set(got))
        lost_events += last_seq[pk] - len(set(got))
        w = watches[pk]
        if (
            any(b < a for a, b in zip(w.positions, w.positions[1:], strict=False))
            or not w.positions
            or w.positions[-1] != last_seq[pk]
        ):
            client_problems += 1
            problems.append(f"session {pk}: client positions end at {w.trace[-4:]} of {last_seq[pk]}")
        if w.errors:
            problems.append(f"session {pk}: client errors {w.errors[:2]}")
    missing_markers = duplicated_markers = 0
    seen_all: dict[tuple[int, int], float] = {}
    for w in watches.values():
        seen_all.update(w.seen)
    for turn in completed_turns:
        found = [(int(a), int(b)) for a, b in MARKER.findall(turn["output_text"])]
        duplicated_markers += len(found) - len(set(found))
        if found != sorted(found):
            problems.append(f"session {turn['session_id']}: markers out of order in the saved text")
        w = watches[turn["session_id"]]
        missing_markers += sum(1 for m in found if m not in w.seen)
    if set(statuses) != {"completed"}:
        problems.append(f"sessions not all completed: {dict(statuses)}")
    latencies = sorted((seen_all[m] - emitted[m]) * 1000 for m in seen_all if m in emitted)
    first_turn: dict[int, float] = {}
    for t in turns:
        if t["started_at"] is not None:
            first_turn[t["session_id"]] = min(first_turn.get(t["session_id"], 1e18), t["started_at"].timestamp())
    pickups = sorted((first_turn[pk] - enqueued[pk]) * 1000 for pk in ids if pk in first_turn and pk in enqueued)
    phases = _pickup_phases(ids, enqueued, first_turn)

    peak = {
        key: max(s[key] for s in sampler.samples) if sampler.samples else 0
        for key in ["web_rss", "web_pss", "leader_rss", "child_rss", "child_pss", "cluster_pss", "load"]
    }
    conn_peak: dict[str, int] = {}
    for s in sampler.samples:
        for name, n in s["connections"].items():
            conn_peak[name] = max(conn_peak.get(name, 0), n)
    loads = [s["load"] for s in sampler.samples] or [0]

    def p(values: list[float], q: float) -> str:
        return f"{harness.pct(values, q):.1f}" if values else "-"

    print()
    print(f"wall {wall:.1f} s; load average (1 min) during the run: min {min(loads):.1f} / max {max(loads):.1f}")
    web_cpu, worker_cpu = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    print(
        f"CPU seconds during the run: workers {worker_cpu:.1f} ({worker_cpu * 1000 / max(len(turns), 1):.0f} ms a "
        f"turn), web processes {web_cpu:.1f}; this process (the WebSocket clients) {bench_cpu[0]:.1f}, the fake "
        f"provider {bench_cpu[1]:.1f}"
    )
    print("| measurement | value | goal |")
    print("|---|---|---|")
    print(f"| sessions completed / started | {statuses.get('completed', 0)} / {SESSIONS} |  |")
    print(f"| turns completed | {len(completed_turns)} (of {len(turns)} started) |  |")
    print(f"| events lost / duplicated (event log vs last_seq) | {lost_events} / {duplicated_events} | 0 / 0 |")
    print(f"| sessions whose client's positions were not monotonic or ended short | {client_problems} | 0 |")
    print(
        f"| markers of completed turns never shown / saved twice | {missing_markers} / {duplicated_markers} | 0 / 0 |"
    )
    print(
        f"| queue pickup ms, n={len(pickups)}: p50 / p95 / max | {p(pickups, 50)} / {p(pickups, 95)} / "
        f"{max(pickups, default=0):.1f} | p95 <= 500 |"
    )
    for name, values in phases.items():
        print(f"| pickup part: {name} ms, n={len(values)}: p50 / p95 / max | {p(values, 50)} / {p(values, 95)} / "
              f"{max(values, default=0):.1f} |  |")  # fmt: skip
    print(
        f"| chunk latency provider -> WebSocket ms, n={len(latencies)}: p50 / p95 / p99 | "
        f"{p(latencies, 50)} / {p(latencies, 95)} / {p(latencies, 99)} | p99 <= 50 |"
    )
    print(f"| client errors | {sum(len(w.errors) for w in watches.values())} | 0 |")
    print()
    print("| process | idle VmRSS MiB | idle PSS MiB | peak VmRSS MiB | peak PSS MiB |")
    print("|---|---|---|---|---|")
    web = (idle["web_rss"], idle["web_pss"], peak["web_rss"], peak["web_pss"])
    print("| web (daphne) | {:.0f} | {:.0f} | {:.0f} | {:.0f} |".format(*web))
    print(f"| worker: qcluster leader | {idle['leader_rss']:.0f} |  | {peak['leader_rss']:.0f} |  |")
    print(
        f"| worker: one django-q2 process (largest) | {idle['child_rss']:.0f} | {idle['child_pss']:.0f} "
        f"| {peak['child_rss']:.0f} | {peak['child_pss']:.0f} |"
    )
    print(
        f"| worker: whole qcluster tree ({idle['cluster_processes']} processes), PSS sum |  | "
        f"{idle['cluster_pss']:.0f} |  | {peak['cluster_pss']:.0f} |"
    )
    if idle["connections"] or conn_peak:
        print()
        print(f"PostgreSQL connections (pg_stat_activity) idle: {idle['connections']}; peak: {conn_peak}")
    for problem in problems[:20]:
        print(f"- {problem}")
    if len(problems) > 20:
        print(f"- ... {len(problems) - 20} more")
    return 1 if problems or lost_events or duplicated_events or missing_markers or duplicated_markers else 0


def _pickup_phases(ids: list[int], enqueued: dict[int, float], first_turn: dict[int, float]) -> dict[str, list[float]]:
    """Where the pickup goes, from django-q2's record of each session's first drive task (Task.started/stopped):
    the queue (start_session returned -> the task started in a worker process), the hand-over (the task's
    run: the claim, and with the session host the wait for a slot) and the drive's first phases (the task
    returned -> the first turn's started_at; without the host the task runs the whole drive, so this is
    left out). Milliseconds, sorted."""
    from django.conf import settings
    from django_q.models import Task

    rows = Task.objects.filter(name__in=[f"session-{pk}" for pk in ids]).values_list("name", "started", "stopped")
    first: dict[int, tuple[float, float]] = {}
    for name, started, stopped in rows:
        pk = int(name.rpartition("-")[2])
        if pk not in first or started.timestamp() < first[pk][0]:
            first[pk] = (started.timestamp(), stopped.timestamp())
    phases: dict[str, list[float]] = {"queue": [], "hand-over": [], "first phases": []}
    for pk, (started, stopped) in first.items():
        if pk in enqueued:
            phases["queue"].append((started - enqueued[pk]) * 1000)
        phases["hand-over"].append((stopped - started) * 1000)
        if pk in first_turn and settings.ENGINE_SESSIONS_PER_WORKER > 1:
            phases["first phases"].append((first_turn[pk] - stopped) * 1000)
    return {name: sorted(values) for name, values in phases.items()}


def _make_user(harness):
    """A fresh Pro user per session (a plan caps the runs one user has at once)."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    from billing.plans import PRO
    from billing.services import get_account, grant_credits

    email = f"load-{time.time_ns()}@example.com"
    user = get_user_model().objects.create_user(username=email, email=email)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=1_000_000, key=f"bench:{email}", description="benchmark credits")
    return user


if __name__ == "__main__":
    sys.exit(main())
