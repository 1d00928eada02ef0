"""Session events: the ordered log the live page renders from and catches up with.

The database is the source of truth; the channel layer is only the fast path. Every event gets
the next monotonic `seq` of its session inside a transaction, and is broadcast after commit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction

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
]


@dataclass(frozen=True)
class NewEvent:
    kind: EventKind
    payload: dict[str, Any]
    turn_id: int | None = None


def group_name(session_id: int) -> str:
    return f"session-{session_id}"


def serialize(event: SessionEvent) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind, "turn_id": event.turn_id, "payload": event.payload}


def append_events(
    *, session_id: int, events: list[NewEvent], broadcast: bool = True, lease_owner: str | None = None
) -> list[SessionEvent]:
    """Persist events with consecutive sequence numbers; broadcast them once the transaction commits.

    With `lease_owner`, the events are written only while that executor holds the session's lease
    (the check is part of the sequence UPDATE, no extra statement); otherwise raises LeaseLost.
    """
    if not events:
        return []
    with transaction.atomic():
        last = _reserve_seqs(session_id, len(events), lease_owner)
        first = last - len(events) + 1
        rows = SessionEvent.objects.bulk_create(
            [
                SessionEvent(session_id=session_id, seq=first + i, kind=e.kind, payload=e.payload, turn_id=e.turn_id)
                for i, e in enumerate(events)
            ]
        )
        if broadcast:
            message = {"type": "session.events", "events": [serialize(row) for row in rows]}
            collected = getattr(_collector, "messages", None)
            if collected is not None:  # the async caller pushes them on its own event loop
                transaction.on_commit(lambda: collected.append((session_id, message)))
            else:
                transaction.on_commit(lambda: broadcast_message(session_id, message))
    return rows


def _reserve_seqs(session_id: int, count: int, lease_owner: str | None = None) -> int:
    """Reserve a block of sequence numbers with one UPDATE … RETURNING; the row lock serialises writers."""
    table = connection.ops.quote_name(WritingSession._meta.db_table)
    sql = f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s"  # noqa: S608 - no user input
    params: list[int | str] = [count, session_id]
    if lease_owner is not None:
        sql += " AND lease_owner = %s"
        params.append(lease_owner)
    with connection.cursor() as cursor:
        cursor.execute(sql + " RETURNING last_seq", params)
        row = cursor.fetchone()
    if row is None:
        if lease_owner is not None and WritingSession.objects.filter(pk=session_id).exists():
            from orchestration.lease import LeaseLost

            raise LeaseLost(f"session {session_id}: lease no longer held by {lease_owner}")
        raise WritingSession.DoesNotExist(f"session {session_id} does not exist")
    return int(row[0])


def append_event(
    *, session_id: int, kind: EventKind, payload: dict[str, Any], turn_id: int | None = None
) -> SessionEvent:
    return append_events(session_id=session_id, events=[NewEvent(kind, payload, turn_id)])[0]


_collector = threading.local()


@contextmanager
def collect_broadcasts() -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Collect (session_id, message) pairs to push instead of pushing each from this thread.

    The engine's database work runs in a worker thread; pushing from there goes through
    async_to_sync (a few ms each). Collected messages are pushed by the engine's event loop.
    """
    previous = getattr(_collector, "messages", None)
    _collector.messages = []
    try:
        yield _collector.messages
    finally:
        _collector.messages = previous


async def push_message(session_id: int, message: dict[str, Any]) -> None:
    """Send to the session's group. The fast path may fail; clients catch up from the database."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        await layer.group_send(group_name(session_id), message)
    except Exception:
        logger.warning("push to session %s failed", session_id, exc_info=True)


def broadcast_message(session_id: int, message: dict[str, Any]) -> None:
    """push_message from synchronous code (views, services)."""
    async_to_sync(push_message)(session_id, message)


def events_after(session_id: int, after_seq: int, limit: int = 5000) -> list[SessionEvent]:
    return list(SessionEvent.objects.filter(session_id=session_id, seq__gt=after_seq).order_by("seq")[:limit])


def streamed_text(turn_ids: list[int], up_to_seq: int | None = None, *, kind: str = "chunk") -> dict[int, str]:
    """Text of turns still streaming, rebuilt from their chunk events (one query).

    kind="reasoning" rebuilds their thinking instead, from the `reasoning` events.
    """
    if not turn_ids:
        return {}
    qs = SessionEvent.objects.filter(turn_id__in=turn_ids, kind=kind).order_by("seq")
    if up_to_seq is not None:
        qs = qs.filter(seq__lte=up_to_seq)
    texts: dict[int, list[str]] = {tid: [] for tid in turn_ids}
    for turn_id, payload in qs.values_list("turn_id", "payload"):
        texts[turn_id].append(payload.get("text", ""))
    return {tid: "".join(parts) for tid, parts in texts.items()}
