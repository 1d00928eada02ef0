"""The path the product relies on, across real processes: web (daphne) -> django-q2 worker -> channel
layer -> WebSocket; and a worker SIGKILLed mid-turn. Runs on whatever database/Redis the suite uses
(SQLite + embedded Redis by default; PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections import Counter

import pytest

from billing.services import get_balance
from orchestration import services
from orchestration.models import LLMModel, SessionEvent, Status, Turn, WritingSession
from tests.live import assert_each_charge_once, preset_session, start_worker, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def demo_session(owner, *, max_rounds: int = 2) -> WritingSession:
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import Agent, Criterion, Project

    seed_catalogue()
    demo = LLMModel.objects.get(provider="demo")
    project = Project.objects.create(owner=owner, name="Demo project")
    session = WritingSession.objects.create(
        project=project, title="Cross-process", brief="Urban trees", max_rounds=max_rounds
    )
    for order, name in enumerate(["Writer", "Editor"]):
        agent = Agent.objects.create(
            session=session, order=order, name=name, role="writer", model=demo, role_prompt="Write well."
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def _login_cookies(client, user) -> str:
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def _collect_ws(url: str, cookie: str, session_id: int, until, timeout: float = 60) -> list[dict]:
    import websockets

    ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session_id}/"
    messages: list[dict] = []
    async with websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": url}) as socket:
        await socket.send(json.dumps({"type": "catch_up", "after": 0}))
        async with asyncio.timeout(timeout):
            while not until(messages):
                messages.append(json.loads(await socket.recv()))
    return messages


@pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
def test_start_from_the_web_runs_in_the_worker_and_streams_to_the_websocket(live_app, client, owner):
    session = demo_session(owner)
    cookie = _login_cookies(client, owner)
    # Start through the real web process, as the builder's Start button does.
    page = urllib.request.urlopen(
        urllib.request.Request(f"{live_app.url}/sessions/{session.pk}/edit/", headers={"Cookie": cookie})
    )
    csrf = re.search(r"csrftoken=([^;]+)", page.headers.get("Set-Cookie", "")).group(1)
    from urllib.parse import urlencode

    form = {"title": session.title, "flow": session.flow, "brief": session.brief, "max_rounds": session.max_rounds}
    start = urllib.request.Request(
        f"{live_app.url}/sessions/{session.pk}/start/",
        data=urlencode(form).encode(),
        method="POST",
        headers={"Cookie": f"{cookie}; csrftoken={csrf}", "X-CSRFToken": csrf, "Referer": live_app.url + "/"},
    )
    response = urllib.request.urlopen(start)
    assert f"/sessions/{session.pk}/" in response.url  # redirected to the live page, not back to the builder

    def finished(messages: list[dict]) -> bool:
        return any(m.get("status") == "completed" for m in messages)

    messages = asyncio.run(_collect_ws(live_app.url, cookie, session.pk, finished))
    fragments = [f for m in messages for f in m.get("fragments", [])]
    assert any(f["target"].endswith("-body") and f["html"] for f in fragments), "streamed text reached the socket"
    assert any(f["target"] == "session-header" for f in fragments)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert Turn.objects.filter(session=session, status=Turn.TurnStatus.COMPLETED).count() == 4
    # The turns ran in the worker process, not here.
    assert "drive_session" not in "".join(m.get("error", "") for m in messages)


# Slow enough (25 tokens a second) that the test SIGKILLs the worker part-way through a turn; 5-second
# leases, so the worker started after it takes the session over soon after.
@pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="25", ENGINE_LEASE_SECONDS="5")
def test_worker_killed_mid_turn_the_session_resumes_by_itself_without_double_saves_or_charges(live_app, owner):
    session = demo_session(owner, max_rounds=2)
    balance_before = get_balance(owner)
    services.start_session(session=session, user=owner)
    wait_for(
        lambda: SessionEvent.objects.filter(session=session, kind="chunk").count() >= 3, timeout=60, message="chunks"
    )
    live_app.worker.kill_group()
    killed_at_seq = WritingSession.objects.get(pk=session.pk).last_seq
    turn = Turn.objects.get(session=session)
    assert turn.status == Turn.TurnStatus.STREAMING  # it died mid-turn

    # A worker restarts (as `manage.py up` does). Nobody calls the watchdog: the workers' own watchdog
    # notices the dead executor and the session carries on; well within the minute of the old schedule.
    live_app.worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
    wait_for(
        lambda: SessionEvent.objects.filter(session=session, kind="chunk", seq__gt=killed_at_seq).exists(),
        timeout=45,
        interval=0.2,
        message="the next token after the kill",
    )
    wait_for(
        lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED, timeout=90, message="completion"
    )
    session.refresh_from_db()
    turns = list(Turn.objects.filter(session=session))
    completed = Counter((t.round, t.agent_id) for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    assert len(completed) == 4 and set(completed.values()) == {1}, completed
    interrupted = [t for t in turns if t.status == Turn.TurnStatus.INCOMPLETE]
    assert len(interrupted) == 1 and interrupted[0].credits == 0
    assert "stopped responding" in interrupted[0].error  # the real cause, not a provider error
    assert_each_charge_once(owner, session, balance_before=balance_before)


# Slow enough (25 tokens a second) that the test SIGKILLs the worker part-way through a turn; 5-second
# leases, so the worker started after it takes the session over soon after.
@pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="25", ENGINE_LEASE_SECONDS="5")
def test_worker_killed_mid_parallel_round_resumes_with_no_duplicated_or_lost_turn(live_app, owner):
    """Issue 10: SIGKILL while three critics stream; the round resumes, each slot completes exactly once."""
    from orchestration.models import StopReason

    session = preset_session(
        owner,
        "product-roundtable",
        project="Specs",
        title="Checkout",
        brief="A one-page spec for a faster checkout.",
        document="# Checkout\n\nOne page. Payment stays as it is.\n",
    )
    balance_before = get_balance(owner)
    services.start_session(session=session, user=owner)

    def three_critics_streaming() -> bool:
        streaming = Turn.objects.filter(session=session, status=Turn.TurnStatus.STREAMING)
        return streaming.count() == 3 and all(
            SessionEvent.objects.filter(turn=t, kind="chunk").exists() for t in streaming
        )

    wait_for(three_critics_streaming, timeout=60, message="three critics streaming")
    live_app.worker.kill_group()
    live_app.worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
    wait_for(
        lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED, timeout=120, message="completion"
    )
    session.refresh_from_db()
    assert session.stop_reason == StopReason.NO_HIGH_ISSUES
    turns = list(Turn.objects.filter(session=session))
    completed = Counter((t.round, t.slot) for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    # Two rounds of three critics and a moderator, each slot saved once; nothing lost.
    assert len(completed) == 8 and set(completed.values()) == {1}, completed
    interrupted = [t for t in turns if t.status == Turn.TurnStatus.INCOMPLETE]
    assert len(interrupted) == 3 and {t.slot for t in interrupted} == {
        s for r, s in completed if r == 1 and s != "moderate"
    }
    assert all(t.credits == 0 for t in interrupted)
    assert_each_charge_once(owner, session, balance_before=balance_before)


# Slow enough (25 tokens a second) that the test SIGKILLs the worker part-way through a turn; 5-second
# leases, so the worker started after it takes the session over soon after.
@pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="25", ENGINE_LEASE_SECONDS="5")
def test_worker_killed_mid_wave_of_a_planned_run_resumes_without_repeating_finished_tasks(live_app, owner):
    """Issue 11: SIGKILL while wave 2's tasks stream; finished tasks are neither re-run nor re-paid."""
    from orchestration.models import StopReason

    session = preset_session(
        owner,
        "planned-report",
        project="Reports",
        title="Street trees",
        brief="Write a short report arguing that cities should plant more street trees.",
    )
    balance_before = get_balance(owner)
    services.start_session(session=session, user=owner)

    def wave_two_streaming() -> bool:
        streaming = Turn.objects.filter(session=session, status=Turn.TurnStatus.STREAMING, slot__startswith="task:")
        return streaming.count() >= 2 and all(
            SessionEvent.objects.filter(turn=t, kind="chunk").exists() for t in streaming
        )

    wait_for(wave_two_streaming, timeout=90, message="wave 2's tasks streaming")
    finished_before = {t.slot: t.pk for t in Turn.objects.filter(session=session, status=Turn.TurnStatus.COMPLETED)}
    assert {"plan", "task:research", "verify:task:research"} <= set(finished_before)
    live_app.worker.kill_group()
    live_app.worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
    wait_for(
        lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED, timeout=120, message="completion"
    )
    session.refresh_from_db()
    assert session.stop_reason == StopReason.PLAN_DONE, session.stop_detail
    turns = list(Turn.objects.filter(session=session))
    completed = Counter(t.slot for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    assert set(completed.values()) == {1}, completed  # every call saved once
    # What had finished before the kill is the very same turn afterwards: not run, not paid again.
    for slot, pk in finished_before.items():
        assert next(t.pk for t in turns if t.slot == slot and t.status == Turn.TurnStatus.COMPLETED) == pk
    interrupted = [t for t in turns if t.status == Turn.TurnStatus.INCOMPLETE]
    assert interrupted and all(t.slot.startswith("task:") and t.credits == 0 for t in interrupted)
    assert all(completed[t.slot] == 1 for t in interrupted)  # each interrupted task completed on the rerun
    assert_each_charge_once(owner, session, balance_before=balance_before)
