"""The resumable event stream behind the API's Server-Sent Events (orchestration/streams.py), in one
process against the real database and the real channel layer (the embedded Redis): replay after a
position, the live tail, a dropped push, heartbeats, the final event, and the waiting helper.
The same paths through daphne with API keys are in tests/api/test_event_streams.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from orchestration import events as ev
from orchestration import streams
from orchestration.models import Project, Status, WritingSession

pytestmark = pytest.mark.django_db(transaction=True)


def parse_sse(raw: bytes) -> list[dict]:
    """SSE bytes -> [{"id", "event", "data"} or {"comment"} or {"retry"}], one per block."""
    blocks = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        item: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                item["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                item[name] = json.loads(value) if name == "data" else value
        blocks.append(item)
    return blocks


def make_session(owner, status: str = Status.RUNNING) -> WritingSession:
    project = Project.objects.create(owner=owner, name="Streams")
    return WritingSession.objects.create(project=project, title="Streamed", brief="Trees", status=status)


def add_chunks(session_id: int, texts: list[str], *, broadcast: bool = True) -> None:
    ev.append_events(
        session_id=session_id, events=[ev.NewEvent("chunk", {"text": t}) for t in texts], broadcast=broadcast
    )


def finish(session_id: int, status: str = Status.COMPLETED) -> None:
    from orchestration.services import emit_status

    session = WritingSession.objects.get(pk=session_id)
    WritingSession.objects.filter(pk=session_id).update(status=status, stop_reason="max_rounds")
    session.status = status
    session.stop_reason = "max_rounds"
    emit_status(session)


async def collect(stream, *, until=None, timeout: float = 20) -> list[dict]:
    out: list[dict] = []
    try:
        async with asyncio.timeout(timeout):
            async for part in stream:
                out.extend(parse_sse(part))
                if until is not None and until(out):
                    break
    finally:
        await stream.aclose()
    return out


def data_events(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if "id" in b]


async def test_a_finished_session_replays_what_follows_the_position_then_ends(owner):
    session = await sync_to_async(make_session)(owner, Status.RUNNING)
    await sync_to_async(add_chunks)(session.pk, ["a", "b", "c", "d"])
    await sync_to_async(finish)(session.pk)

    blocks = await collect(streams.follow(streams.SessionEvents(session.pk), after=2))

    events = data_events(blocks)
    assert [int(e["id"]) for e in events] == [3, 4, 5]
    assert [e["event"] for e in events] == ["chunk", "chunk", "status"]
    assert [e["data"]["payload"].get("text") for e in events[:2]] == ["c", "d"]
    assert blocks[0] == {"retry": str(streams.RETRY_MILLISECONDS)}
    end = blocks[-1]
    assert end["event"] == "end" and "id" not in end
    assert end["data"]["status"] == "completed" and end["data"]["last_seq"] == 5


async def test_the_live_tail_follows_catch_up_with_no_loss_and_no_duplicates(owner):
    session = await sync_to_async(make_session)(owner)
    await sync_to_async(add_chunks)(session.pk, ["one ", "two "])
    stream = streams.follow(streams.SessionEvents(session.pk), after=0, poll_seconds=5)
    task = asyncio.create_task(collect(stream))
    await asyncio.sleep(0.5)  # the stream is in its live tail now
    for i in range(30):
        await sync_to_async(add_chunks)(session.pk, [f"w{i} "])
    await sync_to_async(finish)(session.pk)
    blocks = await task

    events = data_events(blocks)
    seqs = [int(e["id"]) for e in events]
    assert seqs == list(range(1, 34))  # 32 chunks + the final status, each once, in order
    text = "".join(e["data"]["payload"].get("text", "") for e in events)
    assert text == "one two " + "".join(f"w{i} " for i in range(30))
    assert blocks[-1]["event"] == "end"


async def test_events_whose_push_was_lost_still_arrive_from_the_database(owner):
    session = await sync_to_async(make_session)(owner)
    stream = streams.follow(streams.SessionEvents(session.pk), after=0, poll_seconds=0.3)
    task = asyncio.create_task(collect(stream))
    await asyncio.sleep(0.3)
    await sync_to_async(add_chunks)(session.pk, ["lost ", "pushes "], broadcast=False)  # no push at all
    await sync_to_async(add_chunks)(session.pk, ["then one"])  # pushed, but after a gap
    await asyncio.sleep(0.5)
    await sync_to_async(finish)(session.pk)
    events = data_events(await task)
    assert [int(e["id"]) for e in events] == [1, 2, 3, 4]
    assert "".join(e["data"]["payload"].get("text", "") for e in events[:3]) == "lost pushes then one"


async def test_an_idle_stream_sends_heartbeats_and_labels_chunks_with_their_agent(owner):
    session = await sync_to_async(make_session)(owner)
    beats: list[float] = []

    async def on_heartbeat() -> None:
        beats.append(1)

    stream = streams.follow(
        streams.SessionEvents(session.pk), after=0, heartbeat_seconds=0.2, poll_seconds=0.1, on_heartbeat=on_heartbeat
    )
    blocks = await collect(stream, until=lambda out: sum(1 for b in out if b.get("comment") == "ping") >= 3)
    assert sum(1 for b in blocks if b.get("comment") == "ping") >= 3
    assert beats  # the slot refresh runs at the heartbeat pace


async def test_a_position_must_be_a_non_negative_whole_number():
    assert streams.parse_position(None, None) == 0
    assert streams.parse_position("7", "3") == 7  # Last-Event-ID wins (an EventSource reconnect)
    assert streams.parse_position(None, "3") == 3
    assert streams.parse_position("", "3") == 3
    for bad in ("-1", "abc", "1.5", str(2**63), "9" * 30):
        with pytest.raises(streams.InvalidPosition):
            streams.parse_position(bad, None)


async def test_waiting_for_a_run_returns_its_final_state_or_times_out(owner):
    session = await sync_to_async(make_session)(owner)
    source = streams.SessionEvents(session.pk)
    with pytest.raises(TimeoutError):
        await streams.wait_for_run_end(source, timeout=0.5)

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        await sync_to_async(finish)(session.pk)

    finisher = asyncio.create_task(finish_soon())
    state = await streams.wait_for_run_end(source, timeout=20)
    await finisher
    assert not state.active and state.end["status"] == "completed"


def test_the_blocking_helper_works_from_synchronous_code(owner):
    import threading

    from django.db import connection

    session = make_session(owner)

    def finish_later() -> None:
        try:
            finish(session.pk, Status.STOPPED)
        finally:
            connection.close()

    threading.Timer(0.3, finish_later).start()
    state = streams.wait_for_run_end_sync(streams.SessionEvents(session.pk), timeout=20)
    assert not state.active and state.end["status"] == "stopped"


def test_an_event_is_one_sse_message_whatever_its_text():
    event = {"seq": 7, "kind": "chunk", "turn_id": 3, "payload": {"text": "two\nlines\r\n and a lone \ud800 surrogate"}}
    raw = streams.format_event(event)
    assert raw.startswith(b"id: 7\nevent: chunk\ndata: ") and raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 4  # id, event, data, blank: newlines inside the text are JSON-escaped
    (parsed,) = parse_sse(raw)
    assert parsed["data"]["payload"]["text"].startswith("two\nlines\r\n and a lone ")


async def test_text_pushed_before_it_is_saved_streams_as_deltas_without_ids(owner):
    """The engine pushes a turn's unsaved tail at once (`session.chunks`, the whole tail each time) and
    saves it later as a chunk event: the stream sends each new piece once as a `delta` (no id, with
    its offset), then the stored chunk with its id."""
    session = await sync_to_async(make_session)(owner)
    stream = streams.follow(streams.SessionEvents(session.pk), after=0, poll_seconds=5)
    task = asyncio.create_task(collect(stream))
    await asyncio.sleep(0.5)
    for tail in ["Hel", "Hello wor", "Hello world"]:  # the whole unsaved tail, growing
        chunks = [{"turn_id": 99, "kind": "chunk", "offset": 0, "text": tail}]
        await ev.push_message(session.pk, {"type": "session.chunks", "chunks": chunks})
        await asyncio.sleep(0.1)
    await sync_to_async(ev.append_events)(
        session_id=session.pk, events=[ev.NewEvent("chunk", {"text": "Hello world", "offset": 0})]
    )
    await sync_to_async(finish)(session.pk)
    blocks = await task

    deltas = [b for b in blocks if b.get("event") == "delta"]
    assert all("id" not in d for d in deltas)
    assert [(d["data"]["payload"]["offset"], d["data"]["payload"]["text"]) for d in deltas] == [
        (0, "Hel"),
        (3, "lo wor"),
        (9, "ld"),
    ]
    stored = data_events(blocks)
    assert next((e["event"], e["data"]["payload"].get("text")) for e in stored) == ("chunk", "Hello world")
    assert [int(e["id"]) for e in stored] == [1, 2]
