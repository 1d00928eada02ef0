"""The engine's event loop (ENGINE_EVENT_LOOP, orchestration/host.new_event_loop): a session completes on
uvloop and on asyncio's own loop, driven by the session host and by a lone drive task alike. In-process,
through the real drive task, engine, SDKs and the wire-level fake."""

from __future__ import annotations

import asyncio

import pytest

from orchestration import engine, host, tasks
from orchestration.models import Status, Turn, WritingSession
from tests.orchestration.engine_helpers import scored_reply, two_agent_session
from tests.orchestration.test_engine import start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def loops_seen(monkeypatch):
    """The module of the loop each drive of the engine ran on ("uvloop" or "asyncio"), in order."""
    seen: list[str] = []
    drive_leased = engine.drive_leased

    async def recording(session_id, owner, *args):
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return await drive_leased(session_id, owner, *args)

    monkeypatch.setattr(engine, "drive_leased", recording)
    return seen


def assert_completed(session: WritingSession) -> None:
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert [t.status for t in Turn.objects.filter(session=session)] == [Turn.TurnStatus.COMPLETED] * 2
    assert session.lease_owner == ""  # released


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_hosted_session_completes_on_the_configured_loop(
    kind, settings, providers, enqueued, rich_owner, session_host_of, loops_seen
):
    settings.ENGINE_EVENT_LOOP = kind
    session_host_of(capacity=2, wait_seconds=1.0)
    providers.default_reply = scored_reply("word " * 30, 7, 7)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)

    assert tasks.drive_session(session.pk) == "accepted"
    assert host.get_host().join(60)
    assert loops_seen == [kind]
    assert_completed(session)


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_lone_drive_completes_on_the_configured_loop(kind, settings, providers, enqueued, rich_owner, loops_seen):
    settings.ENGINE_EVENT_LOOP = kind
    settings.ENGINE_SESSIONS_PER_WORKER = 1  # no host: the drive task runs the drive on a loop of its own
    providers.default_reply = scored_reply("word " * 30, 7, 7)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)

    tasks.drive_session(session.pk)
    assert loops_seen == [kind]
    assert_completed(session)
