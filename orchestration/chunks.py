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
from orchestration.db_thread import in_db_thread, in_db_thread_background
from orchestration.lease import LeaseLost, fenced_update
from orchestration.models import SessionEvent

# A turn's streamed text of one kind: (kind, turn id).
Key = tuple[ev.TextKind, int]


class ChunkBatcher:
    """Streams text to the page as it arrives and saves it in batches (issue 15: quiet streaming).

    Text is pushed as soon as it arrives, at most once every ENGINE_STREAM_FLUSH_MS (text arriving
    meanwhile goes out with the next push), as each turn's whole unsaved tail {turn id, kind, offset, text}:
    no database work (the consumer merges tails by offset, so a page that reloaded gets everything since
    the last save from the next push). Every ENGINE_STREAM_SAVE_MS the text pushed so far is saved, one
    chunk / reasoning event per turn carrying its offset, in one fenced transaction that also renews the
    lease and reads the status (a Stop). The save runs beside the pushes, never in front of them, and saves
    only text already pushed, so the text after it (pushed from the saved offset on) always joins what the
    page has. A turn's last tail is saved with the turn itself (take()).

    Saving is fenced by the lease; a batch from an executor that lost its lease is dropped and
    `lease_lost` is set.
    """

    def __init__(self, session_id: int, owner: str | None = None) -> None:
        self.session_id = session_id
        self.owner = owner
        self.lease_lost = False
        self.unsaved: dict[Key, list[str]] = {}  # text since the last save
        self.saved: dict[Key, int] = {}  # characters saved so far
        self.pushed: dict[Key, int] = {}  # characters pushed so far (saved, then the unsaved text pushed)
        self.dirty: set[Key] = set()  # received text since the last push
        self.lock = asyncio.Lock()
        self.last_save = time.monotonic()
        self.saving: asyncio.Task[None] | None = None  # the periodic save in flight
        self.status_seen: tuple[float, str] | None = None  # (when, status) read by the last save
        self.wake = asyncio.Event()  # set when text arrives (and to stop run())

    def add(self, turn_id: int, text: str) -> None:
        self._add(("chunk", turn_id), text)

    def add_reasoning(self, turn_id: int, text: str) -> None:
        """Thinking text: its own event kind, so it never mixes with the reply's text."""
        self._add(("reasoning", turn_id), text)

    def _add(self, key: Key, text: str) -> None:
        self.unsaved.setdefault(key, []).append(text)
        self.dirty.add(key)
        self.wake.set()

    def _tails(self, keys: set[Key] | None = None) -> list[ev.Tail]:
        """(kind, turn id, offset, text) of the unsaved text, reasoning first (a turn thinks, then answers)."""
        tails: list[ev.Tail] = []
        chosen = [key for key in self.unsaved if keys is None or key in keys]
        for key in sorted(chosen, key=lambda key: key[0] != "reasoning"):  # stable: turns keep their order
            if parts := self.unsaved[key]:
                text = "".join(parts)
                self.unsaved[key] = [text]  # joined once, not again on every push
                tails.append((key[0], key[1], self.saved.get(key, 0), text))
        return tails

    async def push_tails(self) -> None:
        """Push what arrived since the last push (each turn's whole unsaved tail): no database work."""
        if not self.dirty or self.lease_lost:
            return
        dirty, self.dirty = self.dirty, set()
        tails = self._tails(dirty)
        if not tails:
            return
        for kind, turn_id, offset, text in tails:
            self.pushed[(kind, turn_id)] = offset + len(text)
        # Stored before it is pushed: whatever a page shows, a page rendered after it can show too.
        await asyncio.to_thread(ev.store_unsaved_tails, tails)
        chunks = [
            {"turn_id": turn_id, "kind": kind, "offset": offset, "text": text} for kind, turn_id, offset, text in tails
        ]
        await ev.push_in_order(self.session_id, {"type": "session.chunks", "chunks": chunks})

    def _pushed_part(self, tails: list[ev.Tail]) -> list[ev.Tail]:
        """The part of these tails already pushed (what a periodic save takes)."""
        parts: list[ev.Tail] = []
        for kind, turn_id, offset, text in tails:
            if (length := self.pushed.get((kind, turn_id), offset) - offset) > 0:
                parts.append((kind, turn_id, offset, text[:length]))
        return parts

    def _taken(self, tails: list[ev.Tail]) -> list[ev.NewEvent]:
        """Events for these tails, counted as saved (the caller saves them); text after them stays unsaved.

        Call right after _tails() (no await between), so each turn's unsaved text starts with its tail.
        """
        events = []
        for kind, turn_id, offset, text in tails:
            key: Key = (kind, turn_id)
            rest = "".join(self.unsaved.pop(key, []))[len(text) :]
            if rest:
                self.unsaved[key] = [rest]
            self.saved[key] = offset + len(text)
            events.append(ev.NewEvent(kind, {"text": text, "offset": offset}, turn_id))
        return events

    async def flush(self, *, pushed_only: bool = False) -> None:
        """Save the unsaved text now (one fenced transaction), then push the saved events.

        pushed_only: save only the text already pushed (the periodic save, beside the pushes).
        """
        async with self.lock:
            self.last_save = time.monotonic()
            tails = self._tails()
            new = self._taken(self._pushed_part(tails) if pushed_only else tails)
            if not new or self.lease_lost:
                return
            try:
                # The periodic save may wait behind the phases a user waits for (a drive's first step).
                run = in_db_thread_background if pushed_only else in_db_thread
                rows, status = await run(_save_chunks, self.session_id, self.owner, new)
            except LeaseLost:
                self.lease_lost = True
                return
            if status is not None:
                self.status_seen = (time.monotonic(), status)
            await self.push(rows)

    async def take(self, turn_id: int) -> list[ev.NewEvent]:
        """The turn's text not saved yet, as events, for the caller to save (its stream has ended).

        Waits for a save in flight, so everything earlier is saved first and the order is kept.
        """
        keys: set[Key] = {("chunk", turn_id), ("reasoning", turn_id)}
        async with self.lock:
            self.dirty -= keys
            for key in keys:
                self.pushed.pop(key, None)
            return self._taken(self._tails(keys))

    async def push(self, rows: list[SessionEvent]) -> None:
        if rows:
            await ev.push_in_order(
                self.session_id, {"type": "session.events", "events": [ev.serialize(r) for r in rows]}
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Push text as it arrives, at most every ENGINE_STREAM_FLUSH_MS; save every ENGINE_STREAM_SAVE_MS.

        Text after a quiet spell of at least one push interval is pushed at once, so a chunk waits at most
        one interval and usually not at all. Saves run beside the pushes; run() returns after the one in
        flight (and raises what it raised). Call stop.set() then self.wake.set() to end it.
        """
        interval = settings.ENGINE_STREAM_FLUSH_MS / 1000
        save_every = settings.ENGINE_STREAM_SAVE_MS / 1000
        last_push = 0.0
        try:
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
                self._save_if_due(save_every)
        finally:
            if self.saving is not None:
                await self.saving

    def _save_if_due(self, save_every: float) -> None:
        """Start the periodic save when one is due and none is in flight; raise what a finished one raised."""
        if self.saving is not None and self.saving.done():
            saving, self.saving = self.saving, None
            saving.result()
        if self.saving is None and time.monotonic() - self.last_save >= save_every:
            self.saving = asyncio.create_task(self.flush(pushed_only=True))


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
