"""The session host's leases (issue 15): one renewal statement per tick for all its sessions, and each
session's watcher still sees its own Stop or lost lease from that statement while the others go on.

In-process, through the real drive task, engine, SDKs and the wire-level fake provider; statements are
counted on every thread as tests/orchestration/test_query_budget.py does.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from orchestration import host, services, tasks
from orchestration.db_thread import DbThreads
from orchestration.models import SessionEvent, Status, StopReason, Turn, WritingSession
from tests.live import wait_for
from tests.orchestration.engine_helpers import scored_reply, two_agent_session
from tests.orchestration.test_engine import start
from tests.orchestration.test_leases import OTHER, take_over
from tests.statements import record_statements

pytestmark = pytest.mark.django_db(transaction=True)

BATCH_RENEWAL = re.compile(r"SET lease_expires_at = %s WHERE id IN \(([%s, ]+)\) AND lease_owner = CASE id")


@pytest.fixture
def session_host(session_host_of):
    session_host_of(capacity=4, wait_seconds=1)


def streaming(session: WritingSession) -> bool:
    return Turn.objects.filter(session=session, status=Turn.TurnStatus.STREAMING).exists() and (
        SessionEvent.objects.filter(session=session, kind="chunk").exists()
    )


def hosted(sessions: list[WritingSession], owner) -> None:
    for session in sessions:
        start(session, owner)
        assert tasks.drive_session(session.pk) == "accepted"
    wait_for(lambda: all(streaming(s) for s in sessions), 30, 0.05, "every session streaming")


def test_renewals_for_three_hosted_sessions_cost_one_statement_per_tick(
    providers, enqueued, rich_owner, session_host, settings, monkeypatch
):
    settings.ENGINE_STREAM_SAVE_MS = 5000  # no periodic chunk save (it renews too): only the renewals count
    providers.tokens_per_second = 40  # a few seconds a turn: several renewal ticks while all three stream
    providers.default_reply = scored_reply("word " * 60, 7, 7)
    recorder = record_statements(monkeypatch)
    lone: list[int] = []  # a lone drive's own renewals (engine._renewals); fenced writes call lease.renew_lease
    monkeypatch.setattr("orchestration.engine.renew_lease", lambda session_id, owner: lone.append(session_id))
    sessions = [two_agent_session(rich_owner, max_rounds=1) for _ in range(3)]
    recorder.on = True
    hosted(sessions, rich_owner)
    assert host.get_host().join(60)
    wait_for(lambda: host.get_host().renewals.idle, 10, 0.05, "the last renewal tick")
    recorder.on = False

    batches = [len(m.group(1).split(",")) for _, sql in recorder.statements if (m := BATCH_RENEWAL.search(sql))]
    assert lone == [], "no per-session renewal"
    assert len(batches) == host.get_host().renewals.statements >= 2  # one statement per tick
    assert max(batches) == 3  # while all three streamed, one statement renewed all three leases
    for session in sessions:
        session.refresh_from_db()
        assert session.status == Status.COMPLETED
        assert (session.lease_owner, session.lease_expires_at) == ("", None)


def test_a_stop_on_one_hosted_session_is_honoured_while_the_others_go_on(providers, enqueued, rich_owner, session_host):
    providers.tokens_per_second = 20
    providers.default_reply = scored_reply("word " * 200, 7, 7)  # ~10 s a turn: the Stop lands mid-turn
    sessions = [two_agent_session(rich_owner, max_rounds=1) for _ in range(3)]
    hosted(sessions, rich_owner)
    stopped, *others = sessions
    drive = host.get_host().drive_of(stopped.pk)
    assert drive is not None

    services.stop_session(session=stopped)
    # The host's renewal tick reads "stopping" for this lease: its calls are cancelled and the run ends.
    assert drive.result(timeout=20) == "stopped"
    assert all(streaming(s) for s in others), "the other sessions stream on"

    assert host.get_host().join(60)
    stopped.refresh_from_db()
    assert stopped.stop_reason == StopReason.USER_STOPPED
    assert not Turn.objects.filter(session=stopped, status=Turn.TurnStatus.COMPLETED).exists()
    assert SessionEvent.objects.filter(session=stopped, kind="chunk").exists()  # what was written is kept
    for session in others:
        session.refresh_from_db()
        assert session.status == Status.COMPLETED
        assert Turn.objects.filter(session=session, status=Turn.TurnStatus.COMPLETED).count() == 2


def test_a_hosted_session_whose_lease_was_taken_over_stands_down_while_the_others_go_on(
    providers, enqueued, rich_owner, session_host, settings
):
    settings.ENGINE_STREAM_SAVE_MS = 5000  # the renewal tick, not a chunk save, notices the takeover
    providers.tokens_per_second = 20
    providers.default_reply = scored_reply("word " * 200, 7, 7)
    sessions = [two_agent_session(rich_owner, max_rounds=1) for _ in range(3)]
    hosted(sessions, rich_owner)
    lost, *others = sessions
    drive = host.get_host().drive_of(lost.pk)
    assert drive is not None

    take_over(lost.pk)
    seq_at_takeover = WritingSession.objects.get(pk=lost.pk).last_seq
    assert drive.result(timeout=20) == "lease_lost"
    assert all(streaming(s) for s in others), "the other sessions stream on"

    assert host.get_host().join(60)
    lost.refresh_from_db()
    assert (lost.lease_owner, lost.status) == (OTHER, Status.RUNNING)  # as the new owner found it
    assert not SessionEvent.objects.filter(session=lost, seq__gt=seq_at_takeover).exists()
    for session in others:
        session.refresh_from_db()
        assert session.status == Status.COMPLETED


def test_more_than_one_engine_database_thread_is_refused_on_sqlite(settings):
    settings.ENGINE_DB_THREADS = 4
    if connection.vendor == "postgresql":
        call_command("check")  # each thread writes on its own connection: fine on PostgreSQL
        return
    with pytest.raises(SystemCheckError, match=r"orchestration\.E001.*ENGINE_DB_THREADS is 4"):
        call_command("check")
    settings.ENGINE_DB_THREADS = 1
    call_command("check")


def test_the_database_threads_run_a_phase_ahead_of_background_work_but_never_starve_it():
    threads = DbThreads(1)
    gate = threading.Event()
    order: list[str] = []
    threads.submit(gate.wait)  # the one thread is busy: what follows queues
    renewal = threads.submit(lambda: order.append("renewal"), slack=60)
    phase = threads.submit(lambda: order.append("phase"))
    overdue = threads.submit(lambda: order.append("overdue save"), slack=0.01)
    time.sleep(0.05)  # the save's slack has run out: a phase submitted now waits behind it
    later = threads.submit(lambda: order.append("later phase"))
    gate.set()
    for future in (renewal, phase, overdue, later):
        future.result(timeout=10)
    assert order == ["phase", "overdue save", "later phase", "renewal"]
