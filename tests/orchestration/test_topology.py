"""Production topology (issue 15): two web processes (daphne) and two worker processes (qcluster), as
`manage.py up` starts them on each of two machines, under a modest load against the wire-level fake
provider; one worker is SIGKILLed mid-run. Runs on whatever the suite uses (SQLite + embedded Redis by
default; PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db.models import Sum

from billing.models import CreditEntry
from billing.plans import PRO
from billing.services import get_account, get_balance, grant_credits
from orchestration import services
from orchestration.models import (
    Agent,
    Criterion,
    LLMModel,
    Project,
    SessionEvent,
    Status,
    Turn,
    WritingSession,
    turn_reservation_key,
)
from tests.conftest import make_user
from tests.live import process_tree, start_web, start_worker, stop_all, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SESSIONS = 10  # two owners, five runs each (the Pro plan's concurrent runs)
ROUNDS = 2
MARKERS = 30  # chunks per reply, one marker each: under a second a turn at 40 chunks/s
MARKER = re.compile(r"k(\d{4})m(\d{2})")
EVALUATION = '\n<evaluation>{"scores": {"Clarity": 7}, "feedback": "ok"}</evaluation>'


def _cookie(user) -> str:
    store = SessionStore()
    store["_auth_user_id"] = str(user.pk)
    store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    store["_auth_user_hash"] = user.get_session_auth_hash()
    store.create()
    return f"sessionid={store.session_key}"


def _session(owner, model: LLMModel, n: int) -> WritingSession:
    project, _ = Project.objects.get_or_create(owner=owner, name="Load")
    session = WritingSession.objects.create(project=project, title=f"Load {n}", brief="Trees.", max_rounds=ROUNDS)
    for order, name in enumerate(["Writer", "Editor"]):
        agent = Agent.objects.create(
            session=session, order=order, name=name, model=model, role_prompt="Write.", max_output_tokens=512
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def _last_seq(session_id: int) -> int:
    from django.db import connection

    try:
        return WritingSession.objects.values_list("last_seq", flat=True).get(pk=session_id)
    finally:
        connection.close()


async def _watch(url: str, cookie: str, session_id: int, positions: list[int], seen: set, timeout: float) -> None:
    """The live page's socket: every saved-event position it reports, and every marker it shows."""
    import websockets

    ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session_id}/"
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": url}) as socket:
        await socket.send(json.dumps({"type": "catch_up", "after": 0}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
            except TimeoutError:
                return
            if not message.get("live"):
                positions.append(message["last_seq"])
            for fragment in message.get("fragments", []):
                seen.update(MARKER.findall(fragment.get("html", "")))
            # The page may learn the run completed (the header reads the session row) before the final
            # status event's own push arrives: read on until the socket has brought it to the log's end.
            done = message.get("status") == Status.COMPLETED and positions
            if done and positions[-1] >= await asyncio.to_thread(_last_seq, session_id):
                return


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(False, id="a-session-per-process"),
        # ENGINE_SESSIONS_PER_WORKER: one django-q2 process per qcluster drives up to 8 sessions at once.
        pytest.param(True, id="session-host"),
    ],
)
def test_two_webs_two_workers_one_worker_killed_every_session_ends_once_paid_and_gapless(fake_llm, settings, host):
    from orchestration.catalogue import seed_catalogue

    seed_catalogue()
    counter = iter(range(1, 10_000))

    def markers(request) -> str:
        k = next(counter)
        return "".join(f"k{k:04d}m{i:02d} " for i in range(MARKERS)) + EVALUATION

    fake_llm.default_reply = markers
    fake_llm.chunk_size = 9  # one "k0001m01 " marker per chunk
    fake_llm.tokens_per_second = 40
    settings.PROVIDERS["anthropic"].update(api_key="test", base_url=fake_llm.url)
    model = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    owners = [make_user(f"load{i}@example.com") for i in range(2)]
    for user in owners:
        account = get_account(user)
        account.plan = PRO
        account.save(update_fields=["plan"])
        grant_credits(user=user, amount=100_000, key=f"test:{user.pk}", description="test credits")
    balances = {user.pk: get_balance(user) for user in owners}
    sessions = [(owners[n % 2], _session(owners[n % 2], model, n)) for n in range(SESSIONS)]
    cookies = {user.pk: _cookie(user) for user in owners}

    env = {"ANTHROPIC_API_KEY": "test", "ANTHROPIC_BASE_URL": fake_llm.url, "Q_WORKERS": "5"}
    if host:
        env.update(Q_WORKERS="1", ENGINE_SESSIONS_PER_WORKER="8")
    # The most sessions streaming at once under one worker process's lease, seen before the kill.
    most_per_process = 0
    processes = []
    try:
        workers = [start_worker(**env) for _ in range(2)]
        processes += workers
        with ThreadPoolExecutor(2) as boot:  # the two web processes start side by side
            webs = list(boot.map(lambda _: start_web(timeout=120, **env), range(2)))
        processes += [web for web, _ in webs]
        wait_for(lambda: all("running" in w.log() for w in workers), 90, 0.2, "both clusters running")
        positions: dict[int, list[int]] = {s.pk: [] for _, s in sessions}
        seen: dict[int, set] = {s.pk: set() for _, s in sessions}

        async def run() -> None:
            watchers = [
                asyncio.create_task(
                    _watch(webs[i % 2][1], cookies[user.pk], s.pk, positions[s.pk], seen[s.pk], timeout=100)
                )
                for i, (user, s) in enumerate(sessions)
            ]
            await asyncio.sleep(1)  # the sockets are open and caught up before anything starts

            def start_and_kill() -> None:
                for user, session in sessions:
                    services.start_session(session=session, user=user)
                victim = workers[0]

                def victim_streaming() -> bool:
                    nonlocal most_per_process
                    pids = process_tree(victim.proc.pid)
                    streaming = WritingSession.objects.filter(pk__in=positions, turns__status=Turn.TurnStatus.STREAMING)

                    def owner_pids(rows) -> list[int]:
                        return [int(o.split(":")[1]) for o in set(rows) if o.count(":") >= 2]

                    driving = owner_pids(streaming.values_list("lease_owner", flat=True))
                    most_per_process = max([most_per_process, *Counter(driving).values()])
                    # Kill once the victim streams a turn that saved text; with the host on, only while it
                    # also drives several sessions at once.
                    with_text = WritingSession.objects.filter(  # one filter(): the streaming turn itself saved text
                        pk__in=positions, turns__status=Turn.TurnStatus.STREAMING, turns__events__kind="chunk"
                    )
                    saved = owner_pids(with_text.values_list("lease_owner", flat=True))
                    several = sum(pid in pids for pid in driving) >= (3 if host else 1)
                    return several and any(pid in pids for pid in saved)

                wait_for(victim_streaming, 60, 0.05, "the first worker streaming a turn")
                victim.kill_group()  # SIGKILL the qcluster and every django-q2 process it forked

            await asyncio.to_thread(start_and_kill)
            await asyncio.gather(*watchers)

        asyncio.run(run())
        ids = [s.pk for _, s in sessions]
        wait_for(
            lambda: set(WritingSession.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"completed"},
            60,
            0.2,
            "every session completed",
        )
    finally:
        stop_all(processes)

    if host:  # one django-q2 process per qcluster, and it drove several sessions concurrently
        assert most_per_process >= 3
    turns = list(Turn.objects.filter(session_id__in=ids))
    interrupted = [t for t in turns if t.status == Turn.TurnStatus.INCOMPLETE]
    assert interrupted, "the kill interrupted at least one turn mid-stream"
    assert all(t.credits == 0 for t in interrupted)
    assert not [t for t in turns if t.status not in (Turn.TurnStatus.COMPLETED, Turn.TurnStatus.INCOMPLETE)]
    completed = Counter((t.session_id, t.round, t.agent_id) for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    assert len(completed) == SESSIONS * ROUNDS * 2 and set(completed.values()) == {1}, "no turn lost or saved twice"
    # Money: one reservation and at most one settlement per turn; turns, sessions, ledger and balances agree.
    keys = Counter(CreditEntry.objects.filter(user__in=owners).values_list("idempotency_key", flat=True))
    assert [k for k, n in keys.items() if n > 1] == []
    assert all(turn_reservation_key(t.pk) in keys for t in turns)
    for user in owners:
        mine = [t for t in turns if any(s.pk == t.session_id and u == user for u, s in sessions)]
        charged = sum(t.credits for t in mine)
        assert charged > 0 and get_balance(user) == balances[user.pk] - charged
        assert CreditEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] == get_balance(user)
    for _, session in sessions:
        session.refresh_from_db()
        assert session.credits_used == sum(t.credits for t in turns if t.session_id == session.pk)
        # The event log is gapless, and the page's socket was brought to its end, never backwards.
        seqs = sorted(SessionEvent.objects.filter(session=session).values_list("seq", flat=True))
        assert seqs == list(range(1, session.last_seq + 1))
        got = positions[session.pk]
        assert got == sorted(got) and got[-1] == session.last_seq, (session.pk, got[-5:], session.last_seq)
        # Every marker of every saved turn reached the page; each is saved once, in order.
        for turn in (t for t in turns if t.session_id == session.pk and t.status == Turn.TurnStatus.COMPLETED):
            found = MARKER.findall(turn.output_text)
            assert len(found) == MARKERS and found == sorted(set(found))
            assert set(found) <= seen[session.pk]
