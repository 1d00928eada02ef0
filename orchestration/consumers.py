"""The live session WebSocket. Dumb by design: authorize, join the group, render partials, send.

Protocol (JSON):
  client -> {"type": "catch_up", "after": <last seq the page has>}
  server -> {"type": "events", "last_seq": n, "status": "...", "fragments": [{"target", "swap", "html", ...}]}
            (answers to catch_up also carry "worker": "live" | "lost" | "idle", see lease.executor_state)
  server -> {"type": "events", "live": true, "last_seq": n, "status": "", "fragments": [...]}
            streamed text not saved yet (the engine saves it about once a second): shown at once, and
            placed by its offset in the turn's text, so the saved copy arriving later never shows twice
Fragments are server-rendered, sanitized HTML. Every message carries the sequence number it
brings the page up to, so a page that reconnects asks for exactly what it missed.

Pushes may be lost (channels-redis drops them over a channel's capacity and after its expiry), and the
last pushes of a run may be the ones lost, so the consumer catches up by itself (the same answer as to a
catch_up, sent unasked) when it learned from the session row that the log holds events its pushes have
not brought and no push came for LIVE_RECHECK_SECONDS, or after LIVE_SILENCE_SECONDS without a push while
the run is active (one query for the log's end first). Every client, the page or a plain WebSocket
client, thus ends at the log's last_seq. Streamed text is rendered at most once per LIVE_RENDER_WINDOW_MS
per connection: the first push after a quiet spell at once, pushes meanwhile only merge text and one
render covers them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from atelier.core import metrics
from orchestration import events as ev
from orchestration import lease
from orchestration.live import (
    SessionHead,
    TextKey,
    TurnTextCache,
    merge_tails,
    render_fragments,
    tail_needs_text,
    text_fragment,
)
from orchestration.models import ACTIVE_STATUSES

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MESSAGE_BYTES = 4096
MAX_NESTING = 8  # the protocol needs 1; JSON parsing recurses per level


def _nesting_depth(text: str) -> int:
    """The deepest [ / { nesting of a JSON text, outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _db(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Run a render or read that touches the database on the default executor, not on the one thread
    asgiref gives every thread-sensitive call of the process: under load (200 sockets on two processes)
    the catch-ups and renders of all sockets queued there one behind another. Each call holds the
    connection's lock, so one connection's state is never touched by two threads at once; database
    connections come from the pool and go back after each call (channels closes them)."""
    return cast(Callable[..., Awaitable[T]], database_sync_to_async(func, thread_sensitive=False))


# Sequence numbers are 64-bit in the database; a larger `after` would pin this connection's position
# past every future event, so the page would silently stop receiving pushes.
MAX_SEQ = 2**63 - 1


class SessionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        self.session_id = int(self.scope["url_route"]["kwargs"]["session_id"])
        # On the default executor (_db): at a burst of connects (200 pages opening at once) the query queued
        # on the one thread-sensitive thread behind every other socket's, past daphne's 5 s connect timeout,
        # and daphne closed the socket without an answer (bench/load.py: "did not receive a valid HTTP response").
        if user is None or not user.is_authenticated or not await _db(self._owns_session)(user.pk):
            await self.close(code=4403)
            return
        await self._join()

    async def _join(self) -> None:
        """Set up the connection's state, join the session's group, accept, and start the recheck task."""
        now = time.monotonic()
        self.last_seq = 0  # the page's position: every event up to it has been sent
        self.positioned = False  # a catch_up was answered: last_seq is the page's position even when 0
        self.turn_text: TurnTextCache = {}
        self.known_seq = 0  # the log's last_seq when the session row was last read
        self.status = ""  # the run's status when the session row was last read
        self.advanced_at = now  # when last_seq last grew, or a catch-up was sent
        self.heard_at = now  # when the last push (events or streamed text) arrived
        self.checked_at = now  # when the silence check last read the session row
        self.pending: dict[TextKey, None] = {}  # streamed texts merged but not rendered yet
        self.rendered_at = float("-inf")
        self.render_due: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()  # one render or catch-up at a time: they share turn_text and last_seq
        self.group = ev.group_name(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._accept_counted()
        self.rechecking: asyncio.Task[None] | None = asyncio.create_task(self._recheck_loop())

    async def _accept_counted(self) -> None:
        """Accept, and count the open socket for /metrics (disconnect uncounts only what was counted)."""
        await self.accept()
        metrics.WEBSOCKETS.inc()
        self.counted = True

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            metrics.WEBSOCKETS.dec()
            self.counted = False
        for task in (getattr(self, "rechecking", None), getattr(self, "render_due", None)):
            if task is not None:
                task.cancel()
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def _owns_session(self, user_id: int) -> bool:
        from django.contrib.auth import get_user_model

        from orchestration.models import WritingSession

        # The owner, or active staff (the read-only staff view of the live page): the socket only sends.
        if get_user_model().objects.filter(pk=user_id, is_staff=True, is_active=True).exists():
            return WritingSession.objects.filter(pk=self.session_id).exists()
        return WritingSession.objects.filter(pk=self.session_id, project__owner_id=user_id).exists()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Bad input gets a clear error, never a crash or a dropped connection.
        if bytes_data is not None or text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
            await self.send_json({"type": "error", "error": "Send small JSON text messages only."})
            return
        if _nesting_depth(text_data) > MAX_NESTING:
            # json.loads recurses once per level: "[" * 4000 (under the size cap) raised RecursionError
            # and dropped the connection. Refuse before parsing.
            await self.send_json({"type": "error", "error": f"Messages may nest at most {MAX_NESTING} levels."})
            return
        try:
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError):
            await self.send_json({"type": "error", "error": "Messages must be JSON."})
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:  # any JSON a client sent
        if not isinstance(content, dict) or content.get("type") != "catch_up":
            await self.send_json(
                {"type": "error", "error": 'Unknown message; expected {"type": "catch_up", "after": n}.'}
            )
            return
        after = content.get("after", 0)
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_SEQ:
            await self.send_json({"type": "error", "error": "`after` must be a non-negative integer."})
            return
        await self.catch_up(after)

    async def catch_up(self, after: int) -> None:
        """Answer a catch_up: every event after `after`, rendered from the database."""
        async with self.lock:
            await self._render_pending()  # text merged before this answer goes out before it, as it came
            message = await _db(self._catch_up_message)(after)
            self.advanced_at = time.monotonic()
            await self.send_json(message)

    def _catch_up_message(self, after: int) -> dict[str, Any]:
        events = [ev.serialize(e) for e in ev.events_after(self.session_id, after)]
        head = SessionHead()
        fragments, last_seq, status = render_fragments(
            self.session_id, events, self.turn_text, full_text_for_chunks=True, head=head
        )
        self._learn(head)
        self.last_seq = max(self.last_seq, last_seq, after)
        self.positioned = True
        # Whether a worker is driving the session: the page shows "reconnecting to a worker" if not.
        worker = lease.executor_state(self.session_id)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "worker": worker, "fragments": fragments}

    def _learn(self, head: SessionHead) -> None:
        """Note what a render read of the session row: the log's end (to notice lost pushes) and the status."""
        if head.status:
            self.known_seq = max(self.known_seq, head.last_seq)
            self.status = head.status

    async def session_events(self, message: dict[str, Any]) -> None:
        """Saved events pushed by the engine: rendered in order; a gap in seq means pushes were lost."""
        self.heard_at = time.monotonic()
        if not any(e["seq"] > self.last_seq for e in message.get("events", [])):
            return
        async with self.lock:
            events = [e for e in message.get("events", []) if e["seq"] > self.last_seq]
            if not events:
                return  # a catch-up brought them meanwhile
            await self._render_pending()
            if self._has_gap(events):
                # We missed something (capacity drop, late join, pushes out of order): rebuild from the database.
                payload = await _db(self._catch_up_message)(self.last_seq)
            else:
                payload = await _db(self._live_message)(events)
            self.advanced_at = time.monotonic()
            await self.send_json(payload)

    def _has_gap(self, events: list[dict[str, Any]]) -> bool:
        """True if `events` (those after last_seq, in push order) do not follow on from the page's position
        one by one. Rendering them as they are would move last_seq past the events in the hole, which then
        never reach the page: a missing turn_finished leaves its card streaming, its last text unshown.

        The position counts from 0 once a catch_up was answered (a log that was empty then: its first
        events may be the lost ones too); before any, a push starts wherever it starts.
        """
        expected = self.last_seq + 1 if self.positioned or self.last_seq > 0 else events[0]["seq"]
        for event in events:
            if event["seq"] != expected:
                return True
            expected += 1
        return False

    async def session_chunks(self, message: dict[str, Any]) -> None:
        """Unsaved streamed text from the engine: merged at once, rendered at most once per render window.

        No database query (issue 15) except once for a turn this connection has not seen stream yet.
        """
        self.heard_at = time.monotonic()
        chunks = message.get("chunks", [])
        async with self.lock:
            if tail_needs_text(self.turn_text, chunks):  # a page opened mid-reply: read the turn's text once
                grown = await _db(merge_tails)(self.turn_text, chunks, load=True)
            else:
                grown = merge_tails(self.turn_text, chunks)
            self.pending.update(dict.fromkeys(grown))
            if not self.pending:
                return
            wait = settings.LIVE_RENDER_WINDOW_MS / 1000 - (time.monotonic() - self.rendered_at)
            if wait <= 0:
                await self._render_pending()  # quiet until now: no added latency
            elif self.render_due is None:
                self.render_due = asyncio.create_task(self._render_later(wait))

    async def _render_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        async with self.lock:
            self.render_due = None
            await self._render_pending()

    async def _render_pending(self) -> None:
        """Send the streamed texts merged since the last render, one fragment each (call holding the lock)."""
        if not self.pending:
            return
        keys, self.pending = list(self.pending), {}
        fragments = [text_fragment(self.turn_text, key) for key in keys if key in self.turn_text]
        if fragments:
            await self.send_json(
                {"type": "events", "live": True, "last_seq": self.last_seq, "status": "", "fragments": fragments}
            )
        self.rendered_at = time.monotonic()

    def _live_message(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        head = SessionHead()
        fragments, last_seq, status = render_fragments(self.session_id, events, self.turn_text, head=head)
        self._learn(head)
        self.last_seq = max(self.last_seq, last_seq)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "fragments": fragments}

    async def _recheck_loop(self) -> None:
        """Catch up unasked when pushes may have been lost (see the module docstring); runs until disconnect."""
        grace, silence = settings.LIVE_RECHECK_SECONDS, settings.LIVE_SILENCE_SECONDS
        while True:
            await asyncio.sleep(max(0.05, min(grace, silence) / 4))
            try:
                await self._recheck(grace, silence)
            except Exception:  # the database or the socket failed: the next tick tries again
                logger.warning("live recheck of session %s failed", self.session_id, exc_info=True)

    async def _recheck(self, grace: float, silence: float) -> None:
        now = time.monotonic()
        # While pushes still come, a lost one shows as a gap at the next saved event (session_events), and a
        # worker that is behind pushes what the row already counts a little later: only when they stop
        # short of the log's end is a catch-up needed (not one per grace period on every lagging socket).
        if self.last_seq < self.known_seq and now - max(self.advanced_at, self.heard_at) >= grace:
            await self._catch_up_unasked()  # the log has events the pushes have not brought
        elif now - max(self.heard_at, self.checked_at) >= (
            silence if self.status in ACTIVE_STATUSES else settings.LIVE_IDLE_CHECK_SECONDS
        ):
            # Also, rarely, while the page thinks the run idle (a draft, paused or ended run): a run can start or
            # resume from elsewhere, and when every push of it is lost the page must still catch up.
            self.checked_at = now
            last_seq, status = await _db(self._read_head)()
            self.known_seq, self.status = max(self.known_seq, last_seq), status
            if last_seq > self.last_seq:
                await self._catch_up_unasked()

    async def _catch_up_unasked(self) -> None:
        async with self.lock:
            await self._render_pending()
            message = await _db(self._catch_up_message)(self.last_seq)
            self.advanced_at = time.monotonic()  # even if nothing came: at most one catch-up per grace period
            await self.send_json(message)

    def _read_head(self) -> tuple[int, str]:
        """(last_seq, status) of the session row: one query."""
        from orchestration.models import WritingSession

        row = WritingSession.objects.filter(pk=self.session_id).values_list("last_seq", "status").first()
        return row if row is not None else (self.last_seq, "")


class ConversationConsumer(SessionConsumer):
    """The chat page's WebSocket: the same protocol (catch_up by sequence, pushes) over the conversation's
    run, rendering chat fragments (orchestration.conversations.live). Owner only."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        session_id = None
        if user is not None and user.is_authenticated:
            session_id = await _db(self._conversation_session)(conversation_id, user.pk)
        if session_id is None:
            await self.close(code=4403)
            return
        self.conversation_id = conversation_id
        self.session_id = session_id
        await self._join()

    def _conversation_session(self, conversation_id: int, user_id: int) -> int | None:
        from orchestration.models import Conversation

        return (
            Conversation.objects.filter(pk=conversation_id, project__owner_id=user_id)
            .values_list("session_id", flat=True)
            .first()
        )

    async def session_chunks(self, message: dict[str, Any]) -> None:
        """The chat page shows a reply's text from its saved chunk events (op "text"): pushed tails, which it
        never used, are not rendered for it."""
        self.heard_at = time.monotonic()

    def _catch_up_message(self, after: int) -> dict[str, Any]:
        from orchestration.conversations.live import render_fragments as chat_fragments

        events = [ev.serialize(e) for e in ev.events_after(self.session_id, after)]
        head = SessionHead()
        fragments, last_seq, status = chat_fragments(self.conversation_id, events, full_text=True, head=head)
        self._learn(head)
        self.last_seq = max(self.last_seq, last_seq, after)
        self.positioned = True
        worker = lease.executor_state(self.session_id)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "worker": worker, "fragments": fragments}

    def _live_message(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        from orchestration.conversations.live import render_fragments as chat_fragments

        head = SessionHead()
        fragments, last_seq, status = chat_fragments(self.conversation_id, events, head=head)
        self._learn(head)
        self.last_seq = max(self.last_seq, last_seq)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "fragments": fragments}
