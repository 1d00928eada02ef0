"""The session host (ENGINE_SESSIONS_PER_WORKER > 1): the drive task hands its session to this process's event
loop and returns; sessions stream side by side there; a full host makes the task wait, then hands the session
back to the queue. In-process here, through the real drive task, engine, SDKs and the wire-level fake; the
worker-process version with a SIGKILL is tests/orchestration/test_topology.py (session-host)."""

from __future__ import annotations

import pytest

from orchestration import host, tasks
from orchestration.models import SessionEvent, Status, Turn, WritingSession
from tests.live import wait_for
from tests.orchestration.engine_helpers import scored_reply, two_agent_session
from tests.orchestration.test_engine import start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def session_host(session_host_of):
    session_host_of(capacity=2, wait_seconds=0.3)


def streaming(session: WritingSession) -> bool:
    return SessionEvent.objects.filter(session=session, kind="chunk").exists()


def test_one_process_drives_two_sessions_at_once_and_a_full_host_hands_the_third_back(
    providers, enqueued, rich_owner, session_host
):
    providers.tokens_per_second = 40  # a few seconds a turn: both stream while the third one is refused
    providers.default_reply = scored_reply("word " * 60, 7, 7)
    sessions = [two_agent_session(rich_owner, max_rounds=1) for _ in range(3)]
    for session in sessions:
        start(session, rich_owner)
    enqueued.clear()
    first, second, third = sessions

    assert tasks.drive_session(first.pk) == "accepted"
    assert tasks.drive_session(second.pk) == "accepted"
    assert tasks.drive_session(first.pk) == "busy"  # already driven here: never two drives of one session
    # Both stream at the same time, on the host's one loop, while the drive tasks have long returned.
    wait_for(lambda: streaming(first) and streaming(second), 30, 0.05, "both sessions streaming")
    assert Turn.objects.filter(session__in=[first, second], status=Turn.TurnStatus.STREAMING).count() == 2
    assert host.get_host().live == 2

    # Full: the task waits ENGINE_HOST_WAIT_SECONDS, then puts the session back on the queue, unclaimed.
    assert tasks.drive_session(third.pk) == "host_full"
    assert enqueued == [third.pk]
    third.refresh_from_db()
    assert (third.status, third.lease_owner) == (Status.QUEUED, "")

    assert host.get_host().join(60)
    assert tasks.drive_session(third.pk) == "accepted"
    assert host.get_host().join(60)
    for session in sessions:
        session.refresh_from_db()
        assert session.status == Status.COMPLETED
        assert session.lease_owner == "" and session.lease_expires_at is None  # the host released it
        turns = Turn.objects.filter(session=session)
        assert [t.status for t in turns] == [Turn.TurnStatus.COMPLETED] * 2


def test_the_hand_over_claims_the_lease_and_learns_the_flow_in_one_statement(
    providers, enqueued, rich_owner, monkeypatch
):
    """Issue 15 (queue pickup): the drive task's hand-over to the host sends one statement, the claim that
    returns the session's flow (lease.claim_lease_for_flow), and the flow picks the driver: the conversation
    runner for a conversation's hidden session, the engine for every other flow."""
    from orchestration import engine, lease
    from orchestration.conversations import runner
    from tests.statements import record_statements

    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    recorder = record_statements(monkeypatch)
    recorder.on = True
    assert lease.claim_lease_for_flow(session.pk, "me:1:a") == session.flow
    recorder.on = False
    assert len(recorder.statements) == 1
    assert lease.claim_lease_for_flow(session.pk, "other:2:b") is None  # held and live: not claimable
    WritingSession.objects.filter(pk=session.pk).update(status=Status.COMPLETED, lease_owner="")
    assert lease.claim_lease_for_flow(session.pk, "other:2:b") is None  # not drivable
    assert tasks._leased_driver("conversation") is runner.drive_leased
    assert tasks._leased_driver(session.flow) is engine.drive_leased
