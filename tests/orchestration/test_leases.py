"""Leases: only the executor holding a session's lease writes to it; a stale one stands down silently.

Driven through the real engine, the real SDKs and the wire-level fake provider. A frozen worker is
simulated by another executor taking the lease over (the lease expired while it was frozen).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from billing.models import CreditEntry
from orchestration import engine, services
from orchestration.lease import LeaseLost, claim_lease, release_lease
from orchestration.models import SessionEvent, Status, StopReason, Turn, WritingSession
from orchestration.termination import Stop
from orchestration.turns import WORKER_LOST, abandon_turn, begin_turn, recover_interrupted_turns
from tests.live import wait_for
from tests.orchestration.engine_helpers import counting_replies, scored_reply, two_agent_session
from tests.orchestration.test_engine import start

pytestmark = pytest.mark.django_db(transaction=True)

OTHER = "other-host:4242:takeover"


def take_over(session_id: int, owner: str = OTHER) -> None:
    """Another executor claims the session after the current lease ran out (its holder was frozen)."""
    with transaction.atomic():  # one write transaction: the holder cannot renew in between
        WritingSession.objects.filter(pk=session_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert claim_lease(session_id, owner)


def drive_in_thread(session_id: int) -> tuple[threading.Thread, list[str]]:
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(engine.drive(session_id)))
    runner.start()
    return runner, outcome


def test_a_worker_that_loses_its_lease_mid_stream_stands_down_without_writing(providers, enqueued, rich_owner, client):
    providers.tokens_per_second = 20  # slow enough to take the lease away part-way through the turn
    providers.reply(scored_reply("word " * 300, 7, 7), *[counting_replies()] * 6)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    runner, outcome = drive_in_thread(session.pk)
    wait_for(lambda: SessionEvent.objects.filter(session=session, kind="chunk").count() >= 3, message="chunks")

    take_over(session.pk)
    seq_at_takeover = WritingSession.objects.get(pk=session.pk).last_seq
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert outcome == ["lease_lost"]

    session.refresh_from_db()
    # Not "Stopped by you", not failed: the session is exactly as the new owner found it.
    assert session.status == Status.RUNNING
    assert session.stop_reason == "" and session.stop_detail == ""
    assert session.lease_owner == OTHER
    turn = Turn.objects.get(session=session)
    assert turn.status == Turn.TurnStatus.STREAMING and turn.credits == 0  # not marked, not charged by it
    # Nothing at all was written by the stale worker after the takeover: no chunk, no status, no turn event.
    assert not SessionEvent.objects.filter(session=session, seq__gt=seq_at_takeover).exists()
    assert not CreditEntry.objects.filter(idempotency_key=f"turn:{turn.pk}:settle").exists()

    # The new owner carries on: the interrupted attempt is recovered once and the run completes.
    release_lease(session.pk, OTHER)
    providers.tokens_per_second = 0
    assert engine.drive(session.pk) == "finished"
    session.refresh_from_db()
    assert session.status == Status.COMPLETED and session.stop_reason == StopReason.MAX_ROUNDS
    turns = list(Turn.objects.filter(session=session).order_by("pk"))
    assert [(t.agent_name, t.attempt, t.status) for t in turns] == [
        ("Writer", 1, Turn.TurnStatus.INCOMPLETE),
        ("Writer", 2, Turn.TurnStatus.COMPLETED),
        ("Editor", 1, Turn.TurnStatus.COMPLETED),
    ]
    assert turns[0].error == WORKER_LOST and turns[0].credits == 0
    assert session.credits_used == sum(t.credits for t in turns)
    keys = list(CreditEntry.objects.filter(user=rich_owner).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    # The page folds the interrupted attempt under the one that completed, with the real cause.
    from django.urls import reverse

    client.force_login(rich_owner)
    page = client.get(reverse("session_detail", args=[session.pk])).content.decode()
    assert "attempt 2 of 2" in page
    assert f"Attempt 1 of 2 · interrupted: {WORKER_LOST}" in page


def test_every_engine_write_of_a_stale_owner_is_refused_and_changes_nothing(providers, enqueued, rich_owner):
    """Status changes, turn saves, abandoning and recovering turns: each is fenced by the lease."""
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    stale = "stale-host:1:frozen"
    assert claim_lease(session.pk, stale)
    take_over(session.pk)
    # The new owner has a turn streaming.
    agent = session.agents.get(name="Writer")
    turn_id, request, _ = begin_turn(session, agent, agent.model, 1, 1, owner=OTHER)
    before = (WritingSession.objects.get(pk=session.pk).last_seq, CreditEntry.objects.count())

    writes = [
        lambda: engine._finish(session, Status.STOPPED, Stop(StopReason.USER_STOPPED, "x"), owner=stale),
        lambda: engine._finish(session, Status.COMPLETED, Stop(StopReason.MAX_ROUNDS, "x"), owner=stale),
        lambda: engine._pause(session, Stop(StopReason.USER_PAUSED, "x"), owner=stale),
        lambda: recover_interrupted_turns(session, owner=stale),
        lambda: abandon_turn(
            session.pk, turn_id, agent.model, "partial", request, Turn.TurnStatus.CANCELLED, "x", owner=stale
        ),
        lambda: engine._prepare_step(session.pk, stale),
    ]
    for write in writes:
        with pytest.raises(LeaseLost):
            write()
    session.refresh_from_db()
    assert session.status == Status.QUEUED and session.stop_reason == ""
    assert Turn.objects.get(pk=turn_id).status == Turn.TurnStatus.STREAMING
    assert (session.last_seq, CreditEntry.objects.count()) == before
    assert release_lease(session.pk, stale) is False  # releasing someone else's lease does nothing
    assert WritingSession.objects.get(pk=session.pk).lease_owner == OTHER


def test_a_stale_worker_on_a_session_that_already_completed_stands_down_quietly(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies()] * 2)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    stale = "stale-host:1:frozen"
    assert claim_lease(session.pk, stale)
    WritingSession.objects.filter(pk=session.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert engine.drive(session.pk) == "finished"  # another worker ran it to the end meanwhile
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    # The frozen worker wakes up and wants to stop the run: no error, no change.
    with pytest.raises(LeaseLost):
        engine._finish(session, Status.STOPPED, Stop(StopReason.USER_STOPPED, "Stopped by you."), owner=stale)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED and session.stop_reason == StopReason.MAX_ROUNDS


def test_stop_pressed_while_the_run_finishes_ends_it_as_stopped_at_once(providers, enqueued, rich_owner, monkeypatch):
    """Issue 16: STOPPING -> COMPLETED is not a transition; the Stop wins, without waiting for the watchdog."""
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(rich_owner, max_rounds=2, credit_budget=1)
    start(session, rich_owner)
    assert engine.drive(session.pk, budget_seconds=0) == "requeued"  # one step ran; the budget is spent
    real_check = engine.check_before_step

    def stop_pressed_meanwhile(session):
        stop = real_check(session)
        services.stop_session(session=WritingSession.objects.get(pk=session.pk))  # the user's click lands now
        return stop

    monkeypatch.setattr(engine, "check_before_step", stop_pressed_meanwhile)
    assert engine.drive(session.pk) == "finished"
    session.refresh_from_db()
    assert session.status == Status.STOPPED
    assert session.stop_reason == StopReason.USER_STOPPED and session.stop_detail == "Stopped by you."
    assert session.finished_at is not None and session.lease_owner == ""
    last = SessionEvent.objects.filter(session=session, kind="status").order_by("-seq").first()
    assert last.payload["status"] == Status.STOPPED


# --- The watchdog hands each stuck session to the queue once ------------------------------------


def test_watchdog_redispatches_dead_and_expired_executors_once_and_leaves_live_ones(enqueued, rich_owner):
    import os
    import subprocess

    from orchestration.lease import _machine
    from orchestration.tasks import watchdog

    finished = subprocess.Popen(["true"])
    finished.wait()  # a worker process on this machine that no longer exists
    now = timezone.now()
    here = _machine()
    sessions = {}
    for name, owner, expires in [
        ("expired", "elsewhere:1:a", now - timedelta(seconds=1)),
        ("dead_here", f"{here}:{finished.pid}:b", now + timedelta(seconds=30)),
        ("live_here", f"{here}:{os.getpid()}:c", now + timedelta(seconds=30)),
        ("live_elsewhere", "elsewhere:2:d", now + timedelta(seconds=30)),
        # Same hostname, another container (pid namespace): its pids mean nothing here.
        ("other_container", f"{here.partition('~')[0]}~1:{finished.pid}:e", now + timedelta(seconds=30)),
    ]:
        session = two_agent_session(rich_owner, max_rounds=1)
        WritingSession.objects.filter(pk=session.pk).update(
            status=Status.RUNNING, lease_owner=owner, lease_expires_at=expires
        )
        sessions[name] = session.pk
    never_claimed = two_agent_session(rich_owner, max_rounds=1)
    WritingSession.objects.filter(pk=never_claimed.pk).update(
        status=Status.QUEUED, updated_at=now - timedelta(seconds=60)
    )
    just_queued = two_agent_session(rich_owner, max_rounds=1)
    WritingSession.objects.filter(pk=just_queued.pk).update(status=Status.QUEUED)

    assert watchdog(resume_funded=False) == 3
    assert sorted(enqueued) == sorted([sessions["expired"], sessions["dead_here"], never_claimed.pk])
    # Handed to the queue: the next pass (every worker runs one) does not enqueue them again...
    assert watchdog(resume_funded=False) == 0
    # ...and the task that picks one up may claim it.
    assert claim_lease(sessions["expired"], "worker-host:9:new")
    assert not claim_lease(sessions["live_elsewhere"], "worker-host:9:new")


def test_the_move_to_running_is_one_fenced_compare_and_swap(providers, enqueued, rich_owner):
    """lease.fenced_transition (the first step's QUEUED -> RUNNING): moves the status and reserves the event's
    number only from the expected status and only for the lease holder."""
    from orchestration.lease import fenced_transition

    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    before = WritingSession.objects.get(pk=session.pk)
    assert claim_lease(session.pk, "me:1:a")

    seq = fenced_transition(session.pk, "me:1:a", status_was=Status.QUEUED, status=Status.RUNNING, seqs=1)
    after = WritingSession.objects.get(pk=session.pk)
    assert (seq, after.status, after.last_seq) == (before.last_seq + 1, Status.RUNNING, before.last_seq + 1)
    assert after.updated_at > before.updated_at and after.lease_expires_at > timezone.now()
    # Not from QUEUED any more (a Stop came first, here: it already moved): nothing written.
    assert fenced_transition(session.pk, "me:1:a", status_was=Status.QUEUED, status=Status.RUNNING, seqs=1) is None
    assert WritingSession.objects.get(pk=session.pk).last_seq == after.last_seq
    # Another executor's lease: refused, nothing written.
    take_over(session.pk)
    with pytest.raises(LeaseLost):
        fenced_transition(session.pk, "me:1:a", status_was=Status.RUNNING, status=Status.QUEUED)
    assert WritingSession.objects.get(pk=session.pk).status == Status.RUNNING
