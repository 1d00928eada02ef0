"""Issue 15, quiet streaming: text reaches the page at once but is saved about once a second, and a page
that reloads mid-reply still ends up with exactly the text a page that never reloaded shows."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from orchestration import engine, services
from orchestration import events as ev
from orchestration.live import render_fragments, tail_fragments
from orchestration.models import SessionEvent, Status, Turn
from tests.live import wait_for
from tests.orchestration.engine_helpers import scored_reply, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = scored_reply("# Trees\n\n" + " ".join(f"word{i:03d}" for i in range(160)), 7, 7)


class Page:
    """What the live page's socket consumer keeps per connection, fed the same messages."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.turn_text: dict = {}

    def receive(self, message: dict) -> None:
        if message["type"] == "session.chunks":
            tail_fragments(self.turn_text, message["chunks"])
        else:  # saved events: only the streamed text matters here, not the cards they re-render
            chunks = [e for e in message["events"] if e["kind"] == "chunk"]
            if chunks:
                render_fragments(self.session_id, chunks, self.turn_text)


def test_a_page_reloaded_mid_reply_shows_everything_a_page_that_stayed_shows(
    providers,
    enqueued,
    rich_owner,
    settings,
    monkeypatch,
):
    settings.ENGINE_STREAM_FLUSH_MS = 20
    settings.ENGINE_STREAM_SAVE_MS = 300
    providers.tokens_per_second = 100  # ~3 s of streaming
    providers.reply(REPLY, REPLY)
    session = two_agent_session(rich_owner, max_rounds=1)
    session.agents.filter(name="Editor").update(active=False)
    pushed: list[dict] = []

    async def record(session_id, message):
        pushed.append(message)

    monkeypatch.setattr(ev, "push_message", record)
    services.start_session(session=session, user=rich_owner)
    runner = threading.Thread(target=engine.drive, args=(session.pk,))
    runner.start()
    try:
        # Reload once some text has been saved and the reply is still streaming.
        wait_for(
            lambda: SessionEvent.objects.filter(session=session, kind="chunk").exists(), timeout=60, message="a save"
        )
        time.sleep(0.4)
        seen = len(pushed)
        reloaded = Page(session.pk)
        render_fragments(session.pk, [ev.serialize(e) for e in ev.events_after(session.pk, 0)], reloaded.turn_text,
                         full_text_for_chunks=True)  # fmt: skip
        turn = Turn.objects.get(session=session)
        assert turn.status == Turn.TurnStatus.STREAMING, "the reload happened mid-reply"
        at_reload = reloaded.turn_text[turn.pk]
    finally:
        runner.join(timeout=120)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED

    stayed = Page(session.pk)
    stayed.turn_text[turn.pk] = ""  # it showed the card from turn_started on
    finishing = next(i for i, m in enumerate(pushed) if any(e["kind"] == "turn_finished" for e in m.get("events", [])))
    for message in pushed[:finishing]:
        stayed.receive(message)
    for message in pushed[seen:finishing]:
        reloaded.receive(message)
    shown = stayed.turn_text[turn.pk]
    assert 0 < len(at_reload) < len(shown)
    assert reloaded.turn_text[turn.pk] == shown  # nothing the page showed is missing after the reload
    assert Turn.objects.get(pk=turn.pk).output_text.startswith(shown.split("\n\n<evaluation>")[0][:200])
    # Pushed many times, saved a few: one chunk event per save, not one per push.
    tails = sum(1 for m in pushed if m["type"] == "session.chunks")
    saves = SessionEvent.objects.filter(turn_id=turn.pk, kind="chunk").count()
    assert tails >= 3 * saves, (tails, saves)


def test_pushed_text_alone_is_rendered_without_a_query(owner, django_assert_num_queries):
    session = two_agent_session(owner)
    agent = session.agents.first()
    turn = Turn.objects.create(session=session, round=1, agent=agent, agent_name=agent.name)
    saved = ev.append_event(
        session_id=session.pk, kind="chunk", payload={"text": "Alpha ", "offset": 0}, turn_id=turn.pk
    )
    turn_text = {turn.pk: "Alpha "}
    with django_assert_num_queries(0):
        fragments = tail_fragments(turn_text, [{"turn_id": turn.pk, "kind": "chunk", "offset": 6, "text": "beta"}])
        # The saved copy of text the page already has changes nothing and renders nothing.
        again, _, _ = render_fragments(session.pk, [ev.serialize(saved)], turn_text)
    assert turn_text[turn.pk] == "Alpha beta"
    assert "Alpha beta" in fragments[0]["html"]
    assert again == []
    # A tail starting past what the page has (it missed a save) is not shown with a hole in it.
    assert tail_fragments(turn_text, [{"turn_id": turn.pk, "kind": "chunk", "offset": 50, "text": "x"}]) == []
    assert turn_text[turn.pk] == "Alpha beta"


def test_chunks_of_turns_ended_long_ago_are_compacted_and_a_reload_shows_the_same_text(owner):
    from datetime import timedelta

    from django.utils import timezone

    from orchestration.tasks import watchdog

    session = two_agent_session(owner)
    writer, editor = session.agents.order_by("order")
    old = Turn.objects.create(session=session, round=1, agent=writer, agent_name=writer.name)
    live = Turn.objects.create(session=session, round=1, agent=editor, agent_name=editor.name)
    for turn, pieces in ((old, ["# Trees\n\nShade ", "cools streets."]), (live, ["Still ", "writing"])):
        ev.append_event(session_id=session.pk, kind="turn_started", payload={"round": 1}, turn_id=turn.pk)
        offset = 0
        for piece in pieces:
            ev.append_event(
                session_id=session.pk, kind="chunk", payload={"text": piece, "offset": offset}, turn_id=turn.pk
            )
            offset += len(piece)
    Turn.objects.filter(pk=old.pk).update(
        status=Turn.TurnStatus.COMPLETED,
        output_text="# Trees\n\nShade cools streets.",
        finished_at=timezone.now() - timedelta(hours=2),
    )
    ev.append_event(session_id=session.pk, kind="turn_finished", payload={"status": "completed"}, turn_id=old.pk)

    def reload() -> dict:
        turn_text: dict = {}
        fragments, _, _ = render_fragments(
            session.pk, [ev.serialize(e) for e in ev.events_after(session.pk, 0)], turn_text, full_text_for_chunks=True
        )
        return {f["target"]: f["html"] for f in fragments}

    before = reload()
    watchdog(resume_funded=True)  # the minute schedule compacts

    assert not SessionEvent.objects.filter(turn=old, kind="chunk").exists()
    assert SessionEvent.objects.filter(turn=live, kind="chunk").count() == 2  # still streaming: kept
    after = reload()
    assert after[f"turn-{old.pk}"] == before[f"turn-{old.pk}"]
    assert "Shade cools streets." in after[f"turn-{old.pk}"]
    assert "Still writing" in after[f"turn-{live.pk}"]


def _streaming_turn(owner) -> Turn:
    session = two_agent_session(owner)
    agent = session.agents.first()
    return Turn.objects.create(session=session, round=1, agent=agent, agent_name=agent.name)


def test_every_push_joins_the_text_the_page_has_whenever_the_saves_happen(owner, settings, monkeypatch):
    """A save takes only text already pushed: text that arrived while a push was on its way is pushed next,
    from the saved offset, so a page fed the pushes alone never has a hole (and never waits for a save)."""
    from orchestration.chunks import ChunkBatcher

    settings.ENGINE_STREAM_FLUSH_MS = 5
    settings.ENGINE_STREAM_SAVE_MS = 20  # many saves, each racing the pushes
    turn = _streaming_turn(owner)
    pushed: list[dict] = []

    async def record(session_id, message):
        pushed.append(message)

    def slow_store(tails):  # text keeps arriving while a push is on its way
        time.sleep(0.002)

    monkeypatch.setattr(ev, "push_message", record)
    monkeypatch.setattr(ev, "store_unsaved_tails", slow_store)
    pieces = [f"w{i:03d} " for i in range(300)]

    async def stream() -> None:
        batcher = ChunkBatcher(turn.session_id)
        stop = asyncio.Event()
        runner = asyncio.create_task(batcher.run(stop))
        for piece in pieces:
            batcher.add(turn.pk, piece)
            await asyncio.sleep(0.0005)
        while batcher.dirty:  # the last pieces pushed
            await asyncio.sleep(0.005)
        stop.set()
        batcher.wake.set()
        await runner
        await batcher.flush()

    asyncio.run(stream())

    page = Page(turn.session_id)
    page.turn_text[turn.pk] = ""
    for message in pushed:
        if message["type"] == "session.chunks":  # the pushes alone, no saved events
            page.receive(message)
    assert page.turn_text[turn.pk] == "".join(pieces)
    saves = SessionEvent.objects.filter(turn_id=turn.pk, kind="chunk").count()
    assert saves >= 3, "the saves raced the pushes"
    assert ev.streamed_text([turn.pk])[turn.pk] == "".join(pieces)  # and everything was saved, once, in order


def test_text_is_pushed_while_a_save_is_in_flight(owner, settings, monkeypatch):
    """The periodic save runs beside the pushes: a slow transaction never holds text back from the page."""
    from orchestration import chunks

    settings.ENGINE_STREAM_FLUSH_MS = 5
    settings.ENGINE_STREAM_SAVE_MS = 20
    turn = _streaming_turn(owner)
    saving, release = threading.Event(), threading.Event()
    original = chunks._save_chunks

    def held_save(*args, **kwargs):
        saving.set()
        release.wait(timeout=60)
        return original(*args, **kwargs)

    pushed_during_save: list[str] = []

    async def record(session_id, message):
        if message["type"] == "session.chunks" and saving.is_set() and not release.is_set():
            pushed_during_save.extend(chunk["text"] for chunk in message["chunks"])

    monkeypatch.setattr(chunks, "_save_chunks", held_save)
    monkeypatch.setattr(ev, "push_message", record)
    monkeypatch.setattr(ev, "store_unsaved_tails", lambda tails: None)

    async def stream() -> None:
        batcher = chunks.ChunkBatcher(turn.session_id)
        stop = asyncio.Event()
        runner = asyncio.create_task(batcher.run(stop))
        try:
            batcher.add(turn.pk, "Alpha ")
            async with asyncio.timeout(30):
                while not saving.is_set():
                    await asyncio.sleep(0.005)
                batcher.add(turn.pk, "beta")
                while not any("beta" in text for text in pushed_during_save):
                    await asyncio.sleep(0.005)
        finally:
            release.set()
            stop.set()
            batcher.wake.set()
            await runner
        await batcher.flush()

    asyncio.run(stream())
    assert "beta" in pushed_during_save  # the tail after the saved "Alpha ", pushed while the save was held
    assert ev.streamed_text([turn.pk])[turn.pk] == "Alpha beta"


def test_the_web_process_warms_the_live_page_without_the_database(django_assert_num_queries):
    """atelier/asgi.py calls warm_up() while the server starts: it must not need the database."""
    from orchestration.live import warm_up

    with django_assert_num_queries(0):
        warm_up()
