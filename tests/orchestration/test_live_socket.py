"""Issue 15: the live page's WebSocket under lost pushes and bursts of streamed text, through the whole ASGI
stack (origin check, session cookie, routing, the real channel layer).

Channels delivers at most once (channels-redis drops pushes over a channel's capacity), and the last pushes
of a run may be the ones lost: the consumer catches up from the database by itself, so a plain WebSocket
client that never asks again still ends at the log's last_seq with every event and the whole text.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import Client

from orchestration import engine, services
from orchestration import events as ev
from orchestration.live import streaming_document
from orchestration.models import Status, Turn, WritingSession
from orchestration.rendering import render_markdown
from tests.orchestration.engine_helpers import scored_reply, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {Status.COMPLETED, Status.FAILED, Status.STOPPED}


def _login_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def _communicator(session_id: int, user):
    from channels.testing import WebsocketCommunicator

    from atelier.asgi import application

    cookie = await sync_to_async(_login_cookie)(user)
    headers = [(b"origin", b"http://testserver"), (b"cookie", f"sessionid={cookie}".encode())]
    return WebsocketCommunicator(application, f"/ws/sessions/{session_id}/", headers=headers)


def _run_writer_turn(session: WritingSession, *events: ev.NewEvent, chunks: tuple[str, ...] = ()) -> Turn:
    """Mark the session running and start its writer's turn, in the database only (no push): `events`, then
    turn_started, then the streamed `chunks`."""
    WritingSession.objects.filter(pk=session.pk).update(status=Status.RUNNING)
    agent = session.agents.order_by("order").first()
    turn = Turn.objects.create(session=session, round=1, agent=agent, agent_name=agent.name)
    streamed, offset = [], 0
    for text in chunks:
        streamed.append(ev.NewEvent("chunk", {"text": text, "offset": offset}, turn.pk))
        offset += len(text)
    ev.append_events(
        session_id=session.pk,
        events=[*events, ev.NewEvent("turn_started", {"round": 1}, turn.pk), *streamed],
        broadcast=False,
    )
    return turn


def _streaming_session(owner) -> tuple[WritingSession, Turn]:
    """A running session whose writer turn is streaming, with "Streamed so far." saved (events 1-3)."""
    session = two_agent_session(owner)
    turn = _run_writer_turn(session, chunks=("Streamed ", "so far."))
    session.refresh_from_db()
    return session, turn


def _finish_without_pushes(session_id: int, turn_id: int) -> int:
    """End the turn and the run in the database only: every push of it is lost. Returns the log's last_seq."""
    Turn.objects.filter(pk=turn_id).update(status=Turn.TurnStatus.COMPLETED, output_text="Streamed so far. The end.")
    ev.append_events(
        session_id=session_id,
        events=[
            ev.NewEvent("turn_finished", {"status": "completed"}, turn_id),
            ev.NewEvent("status", {"status": Status.COMPLETED}),
        ],
        broadcast=False,
    )
    WritingSession.objects.filter(pk=session_id).update(status=Status.COMPLETED)
    return WritingSession.objects.values_list("last_seq", flat=True).get(pk=session_id)


async def _until(communicator, done, timeout: float = 30) -> list[dict]:
    """Every message the client gets until done(message) is true (or fail after `timeout` seconds)."""
    messages: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            messages.append(await communicator.receive_json_from(timeout=timeout))
            if done(messages[-1]):
                return messages


async def test_a_client_whose_last_pushes_were_lost_is_brought_to_the_end_of_the_run(owner, settings):
    """The run ends while every push of its last events is lost: the consumer notices the silence of an
    active run, reads the log's end and sends the missing events unasked."""
    settings.LIVE_SILENCE_SECONDS = 0.2
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _communicator(session.pk, owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    first = await communicator.receive_json_from(timeout=10)
    assert (first["last_seq"], first["status"]) == (3, Status.RUNNING)

    last_seq = await sync_to_async(_finish_without_pushes)(session.pk, turn.pk)
    messages = await _until(communicator, lambda m: m.get("last_seq") == last_seq)

    final = messages[-1]
    assert final["status"] == Status.COMPLETED
    card = next(f for f in final["fragments"] if f["target"] == f"turn-{turn.pk}")
    assert "The end." in card["html"]
    await communicator.disconnect()


async def test_a_page_opened_before_its_run_started_catches_up_when_every_push_of_the_run_is_lost(owner, settings):
    """The page connects to a draft session; the run then starts and ends elsewhere with every push lost (a web
    process so far behind that channels-redis dropped them: bench/load.py). The page thinks the run idle, yet
    after LIVE_IDLE_CHECK_SECONDS without a push it reads the log's end and catches up unasked."""
    settings.LIVE_SILENCE_SECONDS = 600  # only the idle check can bring it
    settings.LIVE_IDLE_CHECK_SECONDS = 0.3
    session = await sync_to_async(two_agent_session)(owner)
    communicator = await _communicator(session.pk, owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    first = await communicator.receive_json_from(timeout=10)
    assert (first["last_seq"], first["status"]) == (0, Status.DRAFT)

    def run_elsewhere_without_pushes() -> int:
        turn = _run_writer_turn(session, ev.NewEvent("status", {"status": Status.RUNNING}))
        return _finish_without_pushes(session.pk, turn.pk)

    last_seq = await sync_to_async(run_elsewhere_without_pushes)()
    messages = await _until(communicator, lambda m: m.get("last_seq") == last_seq)
    assert messages[-1]["status"] == Status.COMPLETED
    await communicator.disconnect()


async def test_a_client_that_learned_of_events_its_pushes_never_brought_catches_up(owner, settings):
    """A push re-renders the header from the session row, which already counts later events whose pushes
    are lost (a full channel): after LIVE_RECHECK_SECONDS without them, the consumer reads them itself."""
    settings.LIVE_RECHECK_SECONDS = 0.2
    settings.LIVE_SILENCE_SECONDS = 600  # only the known end of the log can trigger the catch-up here
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _communicator(session.pk, owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    assert (await communicator.receive_json_from(timeout=10))["last_seq"] == 3

    def totals_then_lost_end() -> dict:
        totals = ev.append_events(session_id=session.pk, events=[ev.NewEvent("totals", {})], broadcast=False)
        _finish_without_pushes(session.pk, turn.pk)
        return {"type": "session.events", "events": [ev.serialize(e) for e in totals]}

    pushed = await sync_to_async(totals_then_lost_end)()
    await get_channel_layer().group_send(ev.group_name(session.pk), pushed)  # the only push that arrives
    messages = await _until(communicator, lambda m: m.get("last_seq") == 6)

    assert messages[0]["last_seq"] == 4  # the push itself, then the catch-up the consumer sent unasked
    assert messages[-1]["status"] == Status.COMPLETED and "worker" in messages[-1]
    await communicator.disconnect()


async def test_a_burst_of_streamed_text_is_rendered_once_and_shows_all_of_it(owner, settings):
    """Pushes arriving within the render window only merge text; one render covers them, equal to
    rendering the whole text. The first push after a quiet spell is rendered at once."""
    settings.LIVE_RENDER_WINDOW_MS = 1000
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _communicator(session.pk, owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    await communicator.receive_json_from(timeout=10)
    layer, group = get_channel_layer(), ev.group_name(session.pk)
    saved = "Streamed so far."

    def tail(text: str) -> dict:  # the engine pushes each turn's whole unsaved tail
        return {"type": "session.chunks", "chunks": [{"turn_id": turn.pk, "kind": "chunk", "offset": 16, "text": text}]}

    await layer.group_send(group, tail(" One"))
    first = await communicator.receive_json_from(timeout=10)
    assert first["live"] and f"{saved} One" in first["fragments"][0]["html"]

    words = ["\n\nTwo", " three", " *four*", "\n\n## Five", "\n\nSix", " seven", " eight", " nine"]
    text = " One"
    for word in words:
        text += word
        await layer.group_send(group, tail(text))
    full = saved + text
    messages = await _until(communicator, lambda m: "eight nine" in m["fragments"][0]["html"])

    assert len(messages) < len(words)  # the burst was merged, not rendered once per push
    assert messages[-1]["fragments"] == [
        {"target": f"turn-{turn.pk}-body", "swap": "inner", "html": render_markdown(streaming_document(full))}
    ]
    assert await communicator.receive_nothing(timeout=1.5)  # nothing left over to render
    await communicator.disconnect()


def _end_turn_in_the_database(session_id: int, turn_id: int) -> list[dict]:
    """The turn's last text, its end and the run's totals, saved (events 4-6) but not pushed; returns them."""
    Turn.objects.filter(pk=turn_id).update(status=Turn.TurnStatus.COMPLETED, output_text="Streamed so far. The end.")
    rows = ev.append_events(
        session_id=session_id,
        events=[
            ev.NewEvent("chunk", {"text": " The end.", "offset": 16}, turn_id),
            ev.NewEvent("turn_finished", {"status": "completed"}, turn_id),
            ev.NewEvent("totals", {}),
        ],
        broadcast=False,
    )
    return [ev.serialize(row) for row in rows]


async def _connected_at(session, owner, last_seq: int):
    communicator = await _communicator(session.pk, owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    assert (await communicator.receive_json_from(timeout=10))["last_seq"] == last_seq
    return communicator


def _card_html(messages: list[dict], turn_id: int) -> str:
    return "".join(f["html"] for m in messages for f in m["fragments"] if f["target"] == f"turn-{turn_id}")


async def test_a_push_with_a_hole_inside_is_rebuilt_from_the_database(owner, settings):
    """Two pushes folded into one around an event pushed apart, and that one lost or late: the push's first
    event follows the page's position but a later one does not. Rendering it as it came moved the position
    past the hole, and the turn's end in it never reached the page (its card stayed streaming, its last
    words unshown, although the client ended at last_seq): it is read from the log instead."""
    settings.LIVE_SILENCE_SECONDS = 600
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _connected_at(session, owner, 3)
    chunk, _finished, totals = await sync_to_async(_end_turn_in_the_database)(session.pk, turn.pk)
    await get_channel_layer().group_send(
        ev.group_name(session.pk), {"type": "session.events", "events": [chunk, totals]}
    )
    messages = await _until(communicator, lambda m: m.get("last_seq") == 6, timeout=10)

    assert "worker" in messages[-1]  # a catch-up's answer, not the push rendered as it came
    card = _card_html(messages, turn.pk)
    assert 'data-status="completed"' in card and "The end." in card
    await communicator.disconnect()


async def test_pushes_that_follow_on_are_rendered_as_they_come(owner, settings):
    """The neighbour: a push that follows the position without a hole is rendered from itself (no catch-up)."""
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _connected_at(session, owner, 3)
    events = await sync_to_async(_end_turn_in_the_database)(session.pk, turn.pk)
    await get_channel_layer().group_send(ev.group_name(session.pk), {"type": "session.events", "events": events})
    message = await communicator.receive_json_from(timeout=10)

    assert message["last_seq"] == 6 and "worker" not in message
    assert "The end." in _card_html([message], turn.pk)
    await communicator.disconnect()


async def test_the_first_pushes_of_a_run_lost_are_read_from_the_log(owner, settings):
    """A page that opened before the run wrote anything is at position 0: when the run's first pushes are
    lost, the first push that arrives starts past 1, and the events before it (here the turn's start and
    end) are read from the log, not skipped."""
    settings.LIVE_SILENCE_SECONDS = 600
    session = await sync_to_async(two_agent_session)(owner)
    communicator = await _connected_at(session, owner, 0)

    def run_one_turn() -> tuple[int, dict]:
        agent = session.agents.order_by("order").first()
        turn = Turn.objects.create(
            session=session, round=1, agent=agent, agent_name=agent.name, status=Turn.TurnStatus.COMPLETED,
            output_text="The whole reply.",
        )  # fmt: skip
        rows = ev.append_events(
            session_id=session.pk,
            events=[ev.NewEvent("turn_started", {"round": 1}, turn.pk), ev.NewEvent("turn_finished", {}, turn.pk)],
            broadcast=False,
        )
        rows += ev.append_events(session_id=session.pk, events=[ev.NewEvent("totals", {})], broadcast=False)
        return turn.pk, ev.serialize(rows[-1])

    turn_id, totals = await sync_to_async(run_one_turn)()
    await get_channel_layer().group_send(ev.group_name(session.pk), {"type": "session.events", "events": [totals]})
    messages = await _until(communicator, lambda m: m.get("last_seq") == 3, timeout=10)

    assert "The whole reply." in _card_html(messages, turn_id)
    await communicator.disconnect()


async def test_a_tail_pushed_after_the_turn_ended_leaves_its_finished_card_alone(owner, settings):
    """The engine's last push of a turn's unsaved text can overtake the turn's end: once the card is drawn
    finished, a tail for it is ignored, not drawn over the finished card's full text as streamed text."""
    settings.LIVE_RENDER_WINDOW_MS = 0
    session, turn = await sync_to_async(_streaming_session)(owner)
    communicator = await _connected_at(session, owner, 3)
    layer, group = get_channel_layer(), ev.group_name(session.pk)
    tail = {"type": "session.chunks", "chunks": [{"turn_id": turn.pk, "kind": "chunk", "offset": 16, "text": " The"}]}
    await layer.group_send(group, tail)
    assert "Streamed so far. The" in (await communicator.receive_json_from(timeout=10))["fragments"][0]["html"]
    events = await sync_to_async(_end_turn_in_the_database)(session.pk, turn.pk)
    await layer.group_send(group, {"type": "session.events", "events": events})
    assert "The end." in _card_html([await communicator.receive_json_from(timeout=10)], turn.pk)

    await layer.group_send(group, {**tail, "chunks": [{**tail["chunks"][0], "text": " The e"}]})
    assert await communicator.receive_nothing(timeout=1)
    await communicator.disconnect()


REPLY = scored_reply("# Trees\n\n" + "\n\n".join(" ".join(f"w{p}x{i:02d}" for i in range(12)) for p in range(8)), 7, 7)


async def test_a_real_run_with_lost_pushes_reaches_the_client_whole(
    rich_owner, providers, enqueued, settings, monkeypatch
):
    """A two-agent run driven by the engine against the fake provider, with a third of the saved-event
    pushes and all of them from the last turn's end on dropped on the way to the channel layer: the client,
    which only ever sends one catch_up, ends at the log's last_seq, its positions only grow, and it was
    shown every word."""
    settings.ENGINE_STREAM_SAVE_MS = 100
    settings.LIVE_RECHECK_SECONDS = 0.3
    settings.LIVE_SILENCE_SECONDS = 0.5
    providers.tokens_per_second = 400
    providers.reply(REPLY, REPLY)
    session = await sync_to_async(two_agent_session)(rich_owner, max_rounds=1)
    original, dropped, pushes, finished = ev.push_message, [], itertools.count(1), set()

    async def lossy(session_id: int, message: dict) -> None:
        if message["type"] == "session.events":
            finished.update(e["turn_id"] for e in message["events"] if e["kind"] == "turn_finished")
            if next(pushes) % 3 == 0 or len(finished) == 2:
                dropped.append(message)  # as channels-redis drops a push to a full channel: silently
                return
        await original(session_id, message)

    monkeypatch.setattr(ev, "push_message", lossy)
    communicator = await _communicator(session.pk, rich_owner)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    await communicator.receive_json_from(timeout=10)
    await sync_to_async(services.start_session)(session=session, user=rich_owner)
    runner = threading.Thread(target=engine.drive, args=(session.pk,))
    runner.start()
    try:
        await asyncio.to_thread(runner.join, 120)
        last_seq = await sync_to_async(lambda: WritingSession.objects.get(pk=session.pk).last_seq)()
        seen = await _until(communicator, lambda m: m.get("last_seq") == last_seq and m.get("status") in TERMINAL)
    finally:
        await asyncio.to_thread(runner.join, 120)
    session = await sync_to_async(WritingSession.objects.get)(pk=session.pk)
    assert session.status == Status.COMPLETED
    assert any(e["kind"] == "status" for m in dropped for e in m["events"]), "the run's last pushes were lost"
    positions = [m["last_seq"] for m in seen if not m.get("live")]
    assert positions == sorted(positions) and positions[-1] == session.last_seq
    shown = " ".join(f["html"] for m in seen for f in m["fragments"] if "html" in f)
    for p in range(8):
        assert f"w{p}x11" in shown  # the last word of every paragraph reached the client
    await communicator.disconnect()
