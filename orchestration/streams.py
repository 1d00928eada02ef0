"""Resumable event streams for API clients: Server-Sent Events from the database event log.

The same guarantee as the live page (orchestration/consumers.py): the database is the source of
truth, the channel layer only the fast path. A stream

1. joins the run's channel-layer group first (so nothing pushed from now on is missed),
2. replays every stored event after the client's position (``Last-Event-ID`` or ``?after=``),
3. then follows the live tail: pushed events are used as they arrive when they continue the
   sequence exactly; a gap (a push dropped over capacity, pushes from two processes crossing) or a
   quiet ``poll_seconds`` makes it read the database again. Every event is sent once, in ``seq``
   order, because only events with ``seq`` above the last one sent are ever written out.
4. ends with a final ``end`` event once the run is no longer active and every event up to the
   run's ``last_seq`` has been sent (the run's status and ``last_seq`` are read together from one
   row, and a status change is written in the same transaction as its ``status`` event, so "not
   active and nothing after what was sent" means the run has ended and nothing is left).

The wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html):
``id: <seq>`` / ``event: <kind>`` / ``data: <one line of JSON>``, a blank line after each event,
``: ping`` comment lines while idle, and ``retry:`` once at the start. The ``end`` event carries no
``id`` (it is not a stored event, so a client's resume position stays the last stored event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, TypeVarTuple

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.http import StreamingHttpResponse

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

MAX_SEQ = 2**63 - 1  # sequence numbers are 64-bit in the database
CATCH_UP_BATCH = 500  # events read from the database per query while catching up
RETRY_MILLISECONDS = 2000  # how soon a browser's EventSource reconnects after a drop

T = TypeVar("T")
Args = TypeVarTuple("Args")


def call_and_close(fn: Callable[[*Args], T], *args: *Args) -> T:
    """Run fn, then close this thread's database connection: a stream waits far longer than it
    reads, and must not hold a connection (PostgreSQL's are few) while it waits, nor leave one
    behind in its request thread after the client goes (persistent connections, CONN_MAX_AGE)."""
    from django.db import connection

    try:
        return fn(*args)
    finally:
        if not connection.in_atomic_block:  # never under a caller's open transaction (a test's, say)
            connection.close()


async def _db(fn: Callable[[*Args], T], *args: *Args) -> T:
    """fn(*args) in the request's own thread (Django's thread-sensitive executor), no connection kept."""
    return await sync_to_async(call_and_close)(fn, *args)


class InvalidPosition(ValueError):
    """The client's resume position (``Last-Event-ID`` / ``after``) is not a usable sequence number."""


@dataclass(frozen=True)
class RunState:
    """One consistent read of a run: whether it is still going and its last stored sequence number."""

    active: bool
    last_seq: int
    end: dict[str, Any]  # the final event's data: status, stop reason and detail


class EventSource(Protocol):
    """What a stream needs from a run's event log (a writing session's, a conversation's)."""

    group: str  # the channel-layer group its events are pushed to
    message_type: str  # the "type" of the pushed messages carrying {"events": [...]}

    def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Stored events with seq > after, oldest first, at most `limit`: dicts {seq, kind, turn_id, payload}."""

    def state(self) -> RunState:
        """The run's status and last_seq, read together."""

    def labels(self, turn_ids: set[int]) -> dict[int, dict[str, Any]]:
        """For each turn id: {"agent": name, "round": n, "slot": s} to label its events for the client."""


@dataclass
class SessionEvents:
    """The event log of one writing session (orchestration.events)."""

    session_id: int
    group: str = field(init=False)
    message_type: str = "session.events"

    def __post_init__(self) -> None:
        from orchestration.events import group_name

        self.group = group_name(self.session_id)

    def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        from orchestration.events import events_after, serialize

        return [serialize(event) for event in events_after(self.session_id, after, limit=limit)]

    def state(self) -> RunState:
        from orchestration.models import ACTIVE_STATUSES, WritingSession

        row = (
            WritingSession.objects.filter(pk=self.session_id)
            .values("status", "last_seq", "stop_reason", "stop_detail", "current_round")
            .first()
        )
        if row is None:  # deleted while streaming: nothing more will come
            return RunState(active=False, last_seq=0, end={"status": "deleted", "stop_reason": "", "stop_detail": ""})
        end = {
            "status": row["status"],
            "stop_reason": row["stop_reason"],
            "stop_detail": row["stop_detail"],
            "round": row["current_round"],
        }
        return RunState(active=row["status"] in ACTIVE_STATUSES, last_seq=row["last_seq"], end=end)

    def labels(self, turn_ids: set[int]) -> dict[int, dict[str, Any]]:
        from orchestration.models import Turn

        rows = Turn.objects.filter(pk__in=turn_ids, session_id=self.session_id).values_list(
            "pk", "agent_name", "round", "slot"
        )
        return {pk: {"agent": name, "round": round_, "slot": slot} for pk, name, round_, slot in rows}


def parse_position(last_event_id: str | None, after: str | None) -> int:
    """The sequence number to resume after: ``Last-Event-ID`` wins over ``?after=`` (a browser's
    EventSource reconnects to the same URL and adds the header). Missing both means 0 (everything).

    Raises InvalidPosition with a message for the client when the value is not an integer in
    0..2**63-1.
    """
    for name, raw in (("Last-Event-ID", last_event_id), ("after", after)):
        if raw is None or raw.strip() == "":
            continue
        text = raw.strip()
        if not text.isdigit() or len(text) > 19 or int(text) > MAX_SEQ:
            raise InvalidPosition(f"{name} must be an event id: a whole number from 0 (got {raw[:40]!r}).")
        return int(text)
    return 0


def format_event(event: dict[str, Any]) -> bytes:
    """One stored event as an SSE message: ``id`` = seq, ``event`` = kind, ``data`` = the event as JSON."""
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))  # one line: JSON escapes newlines
    # errors="replace": a lone surrogate in a model's text must not break the stream.
    head = f"id: {event['seq']}\n" if event.get("seq") is not None else ""  # a live delta is not stored: no id
    return f"{head}event: {event['kind']}\ndata: {data}\n\n".encode(errors="replace")


def format_end(end: dict[str, Any], last_seq: int) -> bytes:
    data = json.dumps({**end, "last_seq": last_seq}, ensure_ascii=False, separators=(",", ":"))
    return f"event: end\ndata: {data}\n\n".encode(errors="replace")


HEARTBEAT = b": ping\n\n"


@dataclass
class _Cursor:
    """Where a stream is: the last seq written out, and the agent labels of the turns it has seen."""

    source: EventSource
    last_seq: int
    labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    sent: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, turn) -> characters sent

    def _advance(self, event: dict[str, Any]) -> None:
        """Count a stored chunk / reasoning event's text as sent (its payload's offset when it has one)."""
        if event["kind"] not in ("chunk", "reasoning") or not event.get("turn_id"):
            return
        payload = event.get("payload") or {}
        key = (event["kind"], event["turn_id"])
        offset = payload.get("offset")
        start = offset if isinstance(offset, int) else self.sent.get(key, 0)
        self.sent[key] = max(self.sent.get(key, 0), start + len(payload.get("text", "")))

    def deltas(self, chunks: list[Any]) -> list[dict[str, Any]]:
        """Live text the engine pushed before saving it (``session.chunks``), as ``delta`` /
        ``reasoning_delta`` events without a seq: only the part not sent yet, with its offset."""
        out = []
        for chunk in chunks:
            if not isinstance(chunk, dict) or not isinstance(chunk.get("offset"), int) or not chunk.get("turn_id"):
                continue
            kind, turn_id, offset, text = chunk.get("kind"), chunk["turn_id"], chunk["offset"], chunk.get("text", "")
            if kind not in ("chunk", "reasoning") or not isinstance(text, str):
                continue
            key = (kind, turn_id)
            start = max(self.sent.get(key, 0), offset)
            if offset + len(text) <= start:
                continue
            self.sent[key] = offset + len(text)
            event = {
                "kind": "delta" if kind == "chunk" else "reasoning_delta",
                "turn_id": turn_id,
                "payload": {"offset": start, "text": text[start - offset :]},
            }
            label = self.labels.get(turn_id)
            out.append({**event, "agent": label["agent"]} if label else event)
        return out

    def fresh(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events after last_seq, once each, in seq order."""
        seen: set[int] = set()
        out = []
        for event in sorted(events, key=lambda e: e["seq"]):
            if event["seq"] > self.last_seq and event["seq"] not in seen:
                seen.add(event["seq"])
                out.append(event)
        return out

    def unlabelled(self, events: list[dict[str, Any]]) -> set[int]:
        for event in events:
            if event["kind"] == "turn_started" and event.get("turn_id"):
                payload = event.get("payload") or {}
                self.labels[event["turn_id"]] = {"agent": payload.get("agent_name", "")}
        return {e["turn_id"] for e in events if e.get("turn_id") and e["turn_id"] not in self.labels}

    def emit(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Label the events with their agent's name and advance last_seq past them."""
        out = []
        for event in events:
            label = self.labels.get(event.get("turn_id") or 0)
            out.append({**event, "agent": label["agent"]} if label else event)
            self.last_seq = event["seq"]
            self._advance(event)
        return out

    def take_sync(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """fresh + labels (one query for turns not seen starting) + emit, from synchronous code."""
        fresh = self.fresh(events)
        missing = self.unlabelled(fresh)
        if missing:
            self.labels.update(self.source.labels(missing))
        return self.emit(fresh)

    async def take(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """take_sync without leaving the event loop unless a label must be read from the database."""
        fresh = self.fresh(events)
        missing = self.unlabelled(fresh)
        if missing:
            self.labels.update(await _db(self.source.labels, missing))
        return self.emit(fresh)

    def catch_up(self) -> list[dict[str, Any]]:
        """Every stored event after last_seq (database reads in batches), from synchronous code."""
        out: list[dict[str, Any]] = []
        while True:
            batch = self.source.events_after(self.last_seq, CATCH_UP_BATCH)
            out.extend(self.take_sync(batch))
            if len(batch) < CATCH_UP_BATCH:
                return out


_CLOSE = "stream.close"


async def _relay(layer: BaseChannelLayer, channel: str, inbox: asyncio.Queue[dict[str, Any]]) -> None:
    """Move messages from the stream's own channel to a local queue, until told to stop.

    It is stopped by a message, not cancelled: cancelling channels-redis's receive in the middle of
    its blocking pop took up to ~10 s to unwind (measured), holding the process's receive lock.
    """
    while True:
        message = await layer.receive(channel)
        if message.get("type") == _CLOSE:
            return
        inbox.put_nowait(message)


async def _stop_relay(layer: BaseChannelLayer, channel: str, relay: asyncio.Task[None]) -> None:
    """Leave nothing running: ask the relay to stop; cancel it (without waiting) if it does not."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(layer.send(channel, {"type": _CLOSE}), timeout=2)
    with contextlib.suppress(Exception):
        await asyncio.wait({relay}, timeout=2)
    if not relay.done():
        relay.cancel()


async def follow(
    source: EventSource,
    *,
    after: int,
    heartbeat_seconds: float = 15.0,
    poll_seconds: float = 2.0,
    on_heartbeat: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[bytes, None]:
    """Yield a run's events as SSE bytes: everything after `after`, then the live tail, then ``end``.

    `heartbeat_seconds`: a ``: ping`` comment after this long without output (keeps proxies from
    closing an idle stream); `on_heartbeat` (an async callable) runs at the same pace whether or
    not events flow (the stream-slot refresh). `poll_seconds`: how long the live tail waits for a
    push before it re-reads the run's state (a dropped push, a missed final status). Closing the
    generator (the client went away) leaves the group and stops the relay task; database reads run
    in the request's own thread and close their connection at once (`_db`), so a waiting stream
    holds none.
    """
    layer = get_channel_layer()
    cursor = _Cursor(source, after)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    channel, relay = await _join(layer, source.group, inbox)
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        last_output = last_beat = time.monotonic()
        pending: list[dict[str, Any]] = await _db(cursor.catch_up)
        check_state = True
        while True:
            if pending:
                yield b"".join(format_event(e) for e in pending)
                last_output = time.monotonic()
                check_state = check_state or any(e["kind"] == "status" for e in pending)
            if check_state:
                state = await _db(source.state)
                if not state.active and cursor.last_seq >= state.last_seq:
                    yield format_end(state.end, cursor.last_seq)
                    return
                if state.last_seq > cursor.last_seq:
                    # Stored events no push brought (dropped, or the status push is still on its way).
                    pending = await _db(cursor.catch_up)
                    if pending:
                        continue
                check_state = False
            until_heartbeat = heartbeat_seconds - (time.monotonic() - last_output)
            pending = await _next_events(cursor, inbox, min(poll_seconds, until_heartbeat))
            if not pending:
                check_state = True  # quiet for a while (or a gap the database filled with nothing new)
            now = time.monotonic()
            if not pending and now - last_output >= heartbeat_seconds:
                yield HEARTBEAT
                last_output = now
            if on_heartbeat is not None and now - last_beat >= heartbeat_seconds:
                await on_heartbeat()
                last_beat = now
    finally:
        await _leave(layer, source.group, channel, relay)


async def _join(
    layer: BaseChannelLayer | None, group: str, inbox: asyncio.Queue[dict[str, Any]]
) -> tuple[str | None, asyncio.Task[None] | None]:
    """Join `group` on a new channel and start relaying its pushes into `inbox`: (channel, relay task).

    (None, None) without a channel layer: the stream then polls the database alone.
    """
    if layer is None:
        return None, None
    channel: str = await layer.new_channel()
    await layer.group_add(group, channel)  # before the catch-up read: no push can fall between
    return channel, asyncio.create_task(_relay(layer, channel, inbox))


async def _leave(
    layer: BaseChannelLayer | None, group: str, channel: str | None, relay: asyncio.Task[None] | None
) -> None:
    """Undo `_join`: leave the group and stop the relay task (errors of a closing layer are ignored)."""
    if layer is not None and channel is not None:
        with contextlib.suppress(Exception):
            await layer.group_discard(group, channel)
    if relay is not None and channel is not None:  # both or neither: set together by _join
        await _stop_relay(layer, channel, relay)


def _pushed(message: dict[str, Any], after: int) -> list[dict[str, Any]]:
    events = message.get("events") if isinstance(message, dict) else None
    return [e for e in events or [] if isinstance(e, dict) and isinstance(e.get("seq"), int) and e["seq"] > after]


async def _next_events(cursor: _Cursor, inbox: asyncio.Queue[dict[str, Any]], wait: float) -> list[dict[str, Any]]:
    """Wait up to `wait` seconds for pushed events that continue the sequence; on a gap, read the
    database instead. Returns [] when nothing new came.
    """
    try:
        message = await asyncio.wait_for(inbox.get(), timeout=max(0.05, wait))
    except TimeoutError:
        return []
    messages = [message]
    while not inbox.empty():  # a burst arrived: write it out in one go
        messages.append(inbox.get_nowait())
    events: list[dict[str, Any]] = []
    chunks: list[Any] = []
    for item in messages:
        events.extend(_pushed(item, cursor.last_seq))
        if isinstance(item, dict) and item.get("type") == "session.chunks":
            chunks.extend(item.get("chunks") or [])
    events = cursor.fresh(events)
    stored: list[dict[str, Any]] = []
    if events:
        seqs = [e["seq"] for e in events]
        if seqs[0] == cursor.last_seq + 1 and seqs[-1] - seqs[0] == len(seqs) - 1:
            stored = await cursor.take(events)
        else:
            # Something before these is missing (a push dropped over capacity, or crossing pushes):
            # the database has everything up to the newest pushed event.
            stored = await _db(cursor.catch_up)
    return stored + cursor.deltas(chunks)


async def wait_for_run_end(source: EventSource, *, timeout: float, after: int | None = None) -> RunState:
    """Wait until the run behind `source` is no longer active (blocking requests: ``?wait=true``).

    Follows the run like an SSE client from `after` (default: its current last event, so nothing
    is replayed), so it wakes on the run's final status push, or within a second if that push was
    lost. Returns the final RunState (``end["status"]``: completed, stopped, failed, paused...).
    Raises TimeoutError after `timeout` seconds; the run carries on regardless.
    """
    async with asyncio.timeout(timeout):
        if after is None:
            after = (await _db(source.state)).last_seq
        stream = follow(source, after=after, heartbeat_seconds=max(timeout, 1.0), poll_seconds=1.0)
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()
    return await _db(source.state)


def wait_for_run_end_sync(source: EventSource, *, timeout: float, after: int | None = None) -> RunState:
    """wait_for_run_end for synchronous views and commands (a ninja operation, a management command)."""
    from asgiref.sync import async_to_sync

    return async_to_sync(wait_for_run_end)(source, timeout=timeout, after=after)


# --- Concurrent-stream limit -------------------------------------------------------------------

# Atomically: forget slots whose holder stopped refreshing them, count the rest, take one if the
# count is under the limit. KEYS[1] = the holder's sorted set (member = stream id, score = expiry).
# ARGV: now, expiry, limit, stream id, key ttl (s). Returns the slots in use after taking one,
# or -1 (full: nothing taken).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return used + 1
"""


class StreamLimitReached(Exception):
    """Every stream slot of this holder is in use. `retry_after` in seconds, `limit` the plan's."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"{limit} event streams are already open with this key (the plan allows {limit}).")
        self.limit = limit
        self.retry_after = retry_after


class StreamSlot:
    """One open stream counted against its holder's concurrent-stream limit, shared by every web
    process through Redis (settings.REDIS_URL: the embedded Redis or the production one).

    A slot is a member of a sorted set scored by its expiry. The stream refreshes it on every
    heartbeat and removes it when it closes; a process that dies without closing frees its slots
    when they expire (`ttl_seconds`, three heartbeats). Use ``async with StreamSlot(...)``; entering
    raises StreamLimitReached when `limit` slots are taken.
    """

    def __init__(self, *, holder: str, limit: int, ttl_seconds: float, retry_after: int = 5) -> None:
        import uuid

        from django.conf import settings

        self.key = f"{settings.CACHES['default'].get('KEY_PREFIX', 'atelier')}:api-streams:{holder}"
        self.limit = limit
        self.ttl = ttl_seconds
        self.retry_after = retry_after
        self.member = uuid.uuid4().hex
        self.client: Redis | None = None  # connected on entry

    async def __aenter__(self) -> StreamSlot:
        import redis.asyncio as aioredis
        from django.conf import settings

        self.client = client = aioredis.from_url(settings.REDIS_URL)
        try:
            now = time.time()
            used = await client.eval(
                _ACQUIRE, 1, self.key, now, now + self.ttl, self.limit, self.member, int(self.ttl) + 60
            )
        except BaseException:
            await client.aclose()
            raise
        if int(used) < 0:
            await client.aclose()
            raise StreamLimitReached(self.limit, self.retry_after)
        return self

    async def refresh(self) -> None:
        """Push this slot's expiry forward (called on each heartbeat)."""
        if self.client is None:
            return
        with contextlib.suppress(Exception):  # a Redis hiccup must not end a healthy stream
            await self.client.zadd(self.key, {self.member: time.time() + self.ttl}, xx=True)

    async def __aexit__(self, *exc_info: object) -> None:
        if self.client is None:
            return
        try:
            with contextlib.suppress(Exception):
                await self.client.zrem(self.key, self.member)
        finally:
            await self.client.aclose()


class EventStreamResponse(StreamingHttpResponse):
    """A ``text/event-stream`` response that closes its stream the moment the client goes.

    Django (5.2) consumes a streaming response through ``aclosing(aiter(response))``, but its own
    wrapper generators do not close the iterator they wrap: without this, a stream whose client
    disconnected kept its channel-layer membership, relay task and stream slot until the garbage
    collector found it. Here closing the response's iterator closes `stream` (its ``finally``
    blocks run at once).
    """

    def __init__(self, stream: AsyncGenerator[bytes, None], **kwargs: Any) -> None:
        super().__init__(stream, content_type="text/event-stream; charset=utf-8", **kwargs)
        self._stream = stream
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        finally:
            await self._stream.aclose()
