"""Streamed text on its way out: pushed to the page as it arrives, saved in batches (issue 15).

ChunkBatcher collects a step's streamed text per turn, pushes it to the session's viewers and saves it
as chunk / reasoning events in fenced batches; _save_chunks is that batch's transaction.
"""

from __future__ import annotations

import asyncio
import time

from django.conf import settings
from django.db import transaction

from orchestration import events as ev
from orchestration.db_thread import in_db_thread
from orchestration.lease import LeaseLost, fenced_update
from orchestration.models import SessionEvent


class ChunkBatcher:
    """Streams text to the page at once and saves it in batches (issue 15: quiet streaming).

    Every ENGINE_STREAM_FLUSH_MS the text a turn received since its last save is pushed as an unsaved
    tail, {turn id, kind, offset, text} (no database work: the consumer merges tails by offset, so a
    page that reloaded gets everything since the last save from the next push). Every
    ENGINE_STREAM_SAVE_MS the tails are saved, one chunk / reasoning event per turn carrying its offset,
    in one fenced transaction that also renews the lease and reads the status (a Stop). A turn's last
    tail is saved with the turn itself (take()).

    Saving is fenced by the lease; a batch from an executor that lost its lease is dropped and
    `lease_lost` is set.
    """

    def __init__(self, session_id: int, owner: str | None = None) -> None:
        self.session_id = session_id
        self.owner = owner
        self.lease_lost = False
        self.pending: dict[int, list[str]] = {}  # turn id -> text since its last save
        self.pending_reasoning: dict[int, list[str]] = {}
        self.saved: dict[tuple[str, int], int] = {}  # (kind, turn id) -> characters saved so far
        self.dirty: set[tuple[str, int]] = set()  # received text since the last push
        self.lock = asyncio.Lock()
        self.last_save = time.monotonic()
        self.status_seen: tuple[float, str] | None = None  # (when, status) read by the last save
        self.wake = asyncio.Event()  # set when text arrives (and to stop run())

    def add(self, turn_id: int, text: str) -> None:
        self.pending.setdefault(turn_id, []).append(text)
        self.dirty.add(("chunk", turn_id))
        self.wake.set()

    def add_reasoning(self, turn_id: int, text: str) -> None:
        """Thinking text: its own event kind, so it never mixes with the reply's text."""
        self.pending_reasoning.setdefault(turn_id, []).append(text)
        self.dirty.add(("reasoning", turn_id))
        self.wake.set()

    def _tails(self, kinds: set[tuple[str, int]] | None = None) -> list[ev.Tail]:
        """(kind, turn id, offset, text) of the unsaved text, reasoning first (a turn thinks, then answers)."""
        tails: list[ev.Tail] = []
        sources: tuple[tuple[ev.TextKind, dict[int, list[str]]], ...] = (
            ("reasoning", self.pending_reasoning),
            ("chunk", self.pending),
        )
        for kind, pending in sources:
            for turn_id, parts in pending.items():
                if parts and (kinds is None or (kind, turn_id) in kinds):
                    tails.append((kind, turn_id, self.saved.get((kind, turn_id), 0), "".join(parts)))
        return tails

    async def push_tails(self) -> None:
        """Push what arrived since the last push (each turn's whole unsaved tail): no database work."""
        if not self.dirty or self.lease_lost:
            return
        dirty, self.dirty = self.dirty, set()
        tails = self._tails(dirty)
        if not tails:
            return
        # Stored before it is pushed: whatever a page shows, a page rendered after it can show too.
        await asyncio.to_thread(ev.store_unsaved_tails, tails)
        chunks = [
            {"turn_id": turn_id, "kind": kind, "offset": offset, "text": text} for kind, turn_id, offset, text in tails
        ]
        await ev.push_message(self.session_id, {"type": "session.chunks", "chunks": chunks})

    def _taken(self, tails: list[ev.Tail]) -> list[ev.NewEvent]:
        """Events for these tails, counted as saved (the caller saves them)."""
        events = []
        for kind, turn_id, offset, text in tails:
            (self.pending_reasoning if kind == "reasoning" else self.pending).pop(turn_id, None)
            self.saved[(kind, turn_id)] = offset + len(text)
            events.append(ev.NewEvent(kind, {"text": text, "offset": offset}, turn_id))
        return events

    async def flush(self) -> None:
        """Save every unsaved tail now (one fenced transaction), then push the saved events."""
        async with self.lock:
            self.last_save = time.monotonic()
            new = self._taken(self._tails())
            if not new or self.lease_lost:
                return
            try:
                rows, status = await in_db_thread(_save_chunks, self.session_id, self.owner, new)
            except LeaseLost:
                self.lease_lost = True
                return
            if status is not None:
                self.status_seen = (time.monotonic(), status)
            await self.push(rows)

    async def take(self, turn_id: int) -> list[ev.NewEvent]:
        """The turn's text not saved yet, as events, for the caller to save (its stream has ended).

        Waits for a flush in flight, so everything earlier is saved first and the order is kept.
        """
        async with self.lock:
            self.dirty -= {("chunk", turn_id), ("reasoning", turn_id)}
            return self._taken(self._tails({("chunk", turn_id), ("reasoning", turn_id)}))

    async def push(self, rows: list[SessionEvent]) -> None:
        if rows:
            await ev.push_message(
                self.session_id, {"type": "session.events", "events": [ev.serialize(r) for r in rows]}
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Push text as it arrives, at most every ENGINE_STREAM_FLUSH_MS; save every ENGINE_STREAM_SAVE_MS.

        The first text after a quiet spell is pushed at once (leading edge), so a chunk waits at most one
        push interval and usually less. Call stop.set() then self.wake.set() to end it.
        """
        interval = settings.ENGINE_STREAM_FLUSH_MS / 1000
        save_every = settings.ENGINE_STREAM_SAVE_MS / 1000
        last_push = 0.0
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=save_every)
            except TimeoutError:
                pass
            self.wake.clear()
            if stop.is_set():
                return
            if (wait := interval - (time.monotonic() - last_push)) > 0:
                await asyncio.sleep(wait)  # text arriving meanwhile goes out with this push
            last_push = time.monotonic()
            await self.push_tails()
            if time.monotonic() - self.last_save >= save_every:
                await self.flush()


def _save_chunks(
    session_id: int, owner: str | None, events: list[ev.NewEvent]
) -> tuple[list[SessionEvent], str | None]:
    """Save a batch of streamed text: (rows, status). With an owner, one fenced UPDATE renews the lease too."""
    if owner is None:
        return ev.append_events(session_id=session_id, events=events, broadcast=False), None
    with transaction.atomic():
        row = fenced_update(session_id, owner, seqs=len(events))
        first = row["last_seq"] - len(events) + 1
        return ev.insert_events(session_id=session_id, first_seq=first, events=events, broadcast=False), row["status"]
