"""Session events: the ordered log the live page renders from and catches up with.

The database is the source of truth; the channel layer is only the fast path. Every event gets
the next monotonic `seq` of its session inside a transaction, and is broadcast after commit.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import BaseCache, caches
from django.db import transaction

from atelier.core.per_process import PerProcess
from atelier.core.sql import create_rows, update_row
from orchestration.models import SessionEvent, WritingSession

logger = logging.getLogger(__name__)


# Every kind of event the log holds (docs/architecture.md, "Streaming"); a misspelt one is a type error.
EventKind = Literal[
    "status",
    "turn_started",
    "chunk",
    "reasoning",
    "turn_finished",
    "call_given_up",
    "version",
    "totals",
    "human",
    "message",
    "superseded",
    # The planned flow's journal (orchestration/flows/planned.py, docs/flows.md).
    "plan",
    "plan_repair",
    "plan_approved",
    "route",
    "task_repair",
    "task_output",
    "task_verified",
    "task_failed",
    "assembly",
    "run_summary",
]


# The two kinds that carry streamed text, and an unsaved piece of it: (kind, turn id, offset, text).
TextKind = Literal["chunk", "reasoning"]
Tail = tuple[TextKind, int, int, str]


@dataclass(frozen=True)
class NewEvent:
    kind: EventKind
    payload: dict[str, Any]
    turn_id: int | None = None


def group_name(session_id: int) -> str:
    return f"session-{session_id}"


def serialize(event: SessionEvent) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind, "turn_id": event.turn_id, "payload": event.payload}


class Outbox:
    """The channel-layer messages a database phase committed, for its async caller to push from its event loop.

    The engine's database work runs in its database thread (orchestration/db_thread.py); pushing from there
    goes through async_to_sync (a few ms each). A writer given an Outbox posts its messages here instead, and
    `db_thread.db` pushes them once the phase returns. `messages`: (session id, message), in commit order.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[int, dict[str, Any]]] = []

    def post(self, session_id: int, message: dict[str, Any]) -> None:
        """Keep `message` for the session once the current transaction commits (dropped if it rolls back)."""
        transaction.on_commit(lambda: self.messages.append((session_id, message)))


def append_events(
    *,
    session_id: int,
    events: list[NewEvent],
    broadcast: bool = True,
    lease_owner: str | None = None,
    outbox: Outbox | None = None,
) -> list[SessionEvent]:
    """Persist events with consecutive sequence numbers; broadcast them once the transaction commits (into
    `outbox` when given, for the async caller to push; else pushed from this thread).

    With `lease_owner`, the events are written only while that executor holds the session's lease
    (the check is part of the sequence UPDATE, no extra statement); otherwise raises LeaseLost.
    Joins the caller's transaction without a savepoint (a failure rolls the caller's work back too).
    """
    if not events:
        return []
    with transaction.atomic(savepoint=False):
        last = _reserve_seqs(session_id, len(events), lease_owner)
        first = last - len(events) + 1
        return insert_events(session_id=session_id, first_seq=first, events=events, broadcast=broadcast, outbox=outbox)


def insert_events(
    *,
    session_id: int,
    first_seq: int,
    events: list[NewEvent],
    broadcast: bool = True,
    outbox: Outbox | None = None,
) -> list[SessionEvent]:
    """Insert events whose sequence numbers the caller reserved (first_seq, first_seq + 1, …) in one INSERT.

    Call inside the transaction that reserved them; pushed to the session's group after it commits (posted
    to `outbox` when given, for the async caller to push from its event loop).
    """
    # One plain INSERT (atelier.core.sql): bulk_create's compiling cost three times the statement (issue 15).
    rows = create_rows(
        SessionEvent,
        [
            {"session_id": session_id, "seq": first_seq + i, "kind": e.kind, "payload": e.payload, "turn_id": e.turn_id}
            for i, e in enumerate(events)
        ],
    )
    if broadcast:
        message = {"type": "session.events", "events": [serialize(row) for row in rows]}
        if outbox is not None:  # the async caller pushes them on its own event loop
            outbox.post(session_id, message)
        else:
            transaction.on_commit(lambda: broadcast_message(session_id, message))
    return rows


def _reserve_seqs(session_id: int, count: int, lease_owner: str | None = None) -> int:
    """Reserve a block of sequence numbers with one UPDATE … RETURNING; the row lock serialises writers."""
    where: dict[str, int | str] = {"id": session_id}
    if lease_owner is not None:
        where["lease_owner"] = lease_owner
    row = update_row(WritingSession, where=where, add_fields={"last_seq": count}, returning=("last_seq",))
    if row is None:
        if lease_owner is not None and WritingSession.objects.filter(pk=session_id).exists():
            from orchestration.lease import LeaseLost

            raise LeaseLost(f"session {session_id}: lease no longer held by {lease_owner}")
        raise WritingSession.DoesNotExist(f"session {session_id} does not exist")
    return int(row["last_seq"])


def append_event(
    *,
    session_id: int,
    kind: EventKind,
    payload: dict[str, Any],
    turn_id: int | None = None,
    outbox: Outbox | None = None,
) -> SessionEvent:
    """append_events for one event."""
    return append_events(session_id=session_id, events=[NewEvent(kind, payload, turn_id)], outbox=outbox)[0]


def coalesce_messages(messages: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Fold consecutive session.events messages of one session into one, events in order (one push).

    `messages`: (session id, channel-layer message) as an Outbox gathered them. Other messages
    keep their place, so a session's events never overtake another of its messages.
    """
    folded: list[tuple[int, dict[str, Any]]] = []
    for session_id, message in messages:
        last = folded[-1] if folded else None
        if (
            last is not None
            and last[0] == session_id
            and last[1].get("type") == message.get("type") == "session.events"
        ):
            folded[-1] = (session_id, {**last[1], "events": [*last[1]["events"], *message["events"]]})
        else:
            folded.append((session_id, message))
    return folded


async def push_message(session_id: int, message: dict[str, Any]) -> None:
    """Send to the session's group. The fast path may fail; clients catch up from the database."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group_name(session_id), message)
    except Exception:
        logger.warning("push to session %s failed", session_id, exc_info=True)


# session id -> the latest push queued for it by push_in_order (on the loop that queued it)
_queued_pushes: dict[int, asyncio.Task[None]] = {}


def push_in_order(session_id: int, message: dict[str, Any]) -> asyncio.Task[None]:
    """push_message in the background, behind the session's pushes queued earlier: returns at once with the
    push's task (await it to wait until this and every earlier push of the session went out).

    The engine's turn start and end push this way, so the provider request and the next phase do not wait for
    Redis (issue 15); a page still receives the session's messages in the order they were committed, and its
    chunk pushes (chunks.ChunkBatcher) queue behind the same chain. Must be called from a running event loop.
    """
    previous = _queued_pushes.get(session_id)
    loop = asyncio.get_running_loop()
    if previous is not None and (previous.done() or previous.get_loop() is not loop):
        previous = None  # done, or left behind by a loop that has ended (a drive per asyncio.run in tests)
    task = loop.create_task(_push_after(previous, session_id, message))
    _queued_pushes[session_id] = task
    task.add_done_callback(partial(_forget_push, session_id))
    return task


async def _push_after(previous: asyncio.Task[None] | None, session_id: int, message: dict[str, Any]) -> None:
    if previous is not None:
        await asyncio.wait([previous])  # its outcome is its own: push_message logs a failed push
    await push_message(session_id, message)


def _forget_push(session_id: int, task: asyncio.Task[None]) -> None:
    if _queued_pushes.get(session_id) is task:
        del _queued_pushes[session_id]


async def pushes_sent(session_id: int) -> None:
    """Wait until every push queued for the session on this loop (push_in_order) went out."""
    task = _queued_pushes.get(session_id)
    if task is not None and task.get_loop() is asyncio.get_running_loop():
        await asyncio.wait([task])


def broadcast_message(session_id: int, message: dict[str, Any]) -> None:
    """push_message from synchronous code (views, services)."""
    async_to_sync(push_message)(session_id, message)


def events_after(session_id: int, after_seq: int, limit: int = 5000) -> list[SessionEvent]:
    return list(SessionEvent.objects.filter(session_id=session_id, seq__gt=after_seq).order_by("seq")[:limit])


def compact_streamed_text(*, older_than_seconds: float | None = None, limit: int = 50_000) -> int:
    """Delete the chunk and reasoning events of turns that ended more than `older_than_seconds` ago.

    A finished turn's text and reasoning are in its row (output_text, reasoning), and the page renders a
    finished turn's card from the row, so catch-up after a reload shows exactly the same text without them;
    the event table then grows by a few rows per turn instead of one per save. Default age:
    settings.ENGINE_COMPACT_AFTER_SECONDS (an API client replaying older events gets the turns' cards and
    totals, not their chunks). At most `limit` rows per call (the minute schedule calls it). Returns how many.
    """
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from orchestration.models import Turn

    age = settings.ENGINE_COMPACT_AFTER_SECONDS if older_than_seconds is None else older_than_seconds
    cutoff = timezone.now() - timedelta(seconds=age)
    ids = list(
        SessionEvent.objects.filter(
            kind__in=("chunk", "reasoning"), turn__status__in=Turn.TERMINAL_STATUSES, turn__finished_at__lt=cutoff
        ).values_list("pk", flat=True)[:limit]
    )
    if not ids:
        return 0
    return SessionEvent.objects.filter(pk__in=ids).delete()[0]


def streamed_text(turn_ids: list[int], up_to_seq: int | None = None, *, kind: str = "chunk") -> dict[int, str]:
    """Text of turns still streaming, rebuilt from their chunk events (one query).

    kind="reasoning" rebuilds their thinking instead, from the `reasoning` events.
    """
    if not turn_ids:
        return {}
    qs = SessionEvent.objects.filter(turn_id__in=turn_ids, kind=kind).order_by("seq")
    if up_to_seq is not None:
        qs = qs.filter(seq__lte=up_to_seq)
    texts: dict[int, str] = dict.fromkeys(turn_ids, "")
    for turn_id, payload in qs.values_list("turn_id", "payload"):
        offset, text = payload.get("offset"), payload.get("text", "")
        merged = merge_text(texts[turn_id], offset if isinstance(offset, int) else None, text)
        texts[turn_id] = merged if merged is not None else texts[turn_id] + text
    # What the engine pushed but has not saved yet (at most ENGINE_STREAM_SAVE_MS of it): a page that
    # reloads shows everything it showed before. Placed by offset, so it never shows twice.
    for tid, (offset, text) in unsaved_tails(turn_ids, kind).items():
        texts[tid] = merge_text(texts[tid], offset, text) or texts[tid]
    return texts


TAIL_SECONDS = 120  # an unsaved tail outlives any save interval; a dead worker's is gone after this


def _tail_key(kind: str, turn_id: int) -> str:
    """Keyed by database too: two databases sharing a Redis (test workers, staging) never mix turns."""
    from django.conf import settings

    database = zlib.crc32(str(settings.DATABASES["default"].get("NAME", "")).encode())
    return f"stream-tail:{database:x}:{kind}:{turn_id}"


# Made afresh when the CACHES entry it was made from is replaced (tests override settings).
_tail_cache = PerProcess(lambda: caches.create_connection("default"), key=lambda: settings.CACHES["default"])


def _tails_cache() -> BaseCache:
    """One client of the default cache per process, for the unsaved tails.

    django.core.cache.cache resolves through asgiref's Local, which keeps one client per asyncio context, so
    in each asyncio.to_thread call (every push) it built a new client: a new Redis connection pool, and a
    new connection, per push (a py-spy of a worker process driving 100 sessions, issue 15). redis-py's pool
    is thread-safe; a new one is made in a forked child or after the CACHES setting changed (tests).
    """
    return _tail_cache.get()


def store_unsaved_tails(tails: list[Tail]) -> None:
    """Keep each streaming turn's unsaved text (kind, turn id, offset, text) in the cache (Redis), shared with
    the web processes, so a page rendered now includes it. One round trip; a cache failure only means a
    reload waits for the next push."""
    cache = _tails_cache()
    try:
        cache.set_many({_tail_key(k, tid): (offset, text) for k, tid, offset, text in tails}, TAIL_SECONDS)
    except Exception:
        logger.warning("could not store the unsaved streamed text", exc_info=True)


def unsaved_tails(turn_ids: list[int], kind: str = "chunk") -> dict[int, tuple[int, str]]:
    """turn id -> (offset, text) the engine pushed but has not saved yet (see store_unsaved_tails)."""
    cache = _tails_cache()
    try:
        found = cache.get_many([_tail_key(kind, tid) for tid in turn_ids])
    except Exception:
        logger.warning("could not read the unsaved streamed text", exc_info=True)
        return {}
    return {tid: tuple(found[_tail_key(kind, tid)]) for tid in turn_ids if _tail_key(kind, tid) in found}


def merge_text(known: str, offset: int | None, text: str) -> str | None:
    """`known` with `text` placed at character `offset` (None: appended). None if there is a gap before it.

    Streamed text reaches a page twice, as unsaved tails pushed at once and as saved events later: placing
    each piece at its offset makes the repeats harmless and never shows text twice.
    """
    if offset is None:
        return known + text
    if offset > len(known):
        return None
    if offset + len(text) <= len(known):
        return known
    return known[:offset] + text
