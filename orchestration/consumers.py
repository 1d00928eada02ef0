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
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from atelier.core import metrics
from orchestration import events as ev
from orchestration import lease
from orchestration.live import TurnTextCache, render_fragments, tail_fragments, tail_needs_text

logger = logging.getLogger(__name__)

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


# Sequence numbers are 64-bit in the database; a larger `after` would pin this connection's position
# past every future event, so the page would silently stop receiving pushes.
MAX_SEQ = 2**63 - 1


class SessionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        self.session_id = int(self.scope["url_route"]["kwargs"]["session_id"])
        if user is None or not user.is_authenticated or not await self._owns_session(user.pk):
            await self.close(code=4403)
            return
        self.last_seq = 0
        self.turn_text: TurnTextCache = {}
        self.group = ev.group_name(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._accept_counted()

    async def _accept_counted(self) -> None:
        """Accept, and count the open socket for /metrics (disconnect uncounts only what was counted)."""
        await self.accept()
        metrics.WEBSOCKETS.inc()
        self.counted = True

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            metrics.WEBSOCKETS.dec()
            self.counted = False
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    @database_sync_to_async
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
        message = await database_sync_to_async(self._catch_up_message)(after)
        await self.send_json(message)

    def _catch_up_message(self, after: int) -> dict[str, Any]:
        events = [ev.serialize(e) for e in ev.events_after(self.session_id, after)]
        fragments, last_seq, status = render_fragments(
            self.session_id, events, self.turn_text, full_text_for_chunks=True
        )
        self.last_seq = max(self.last_seq, last_seq, after)
        # Whether a worker is driving the session: the page shows "reconnecting to a worker" if not.
        worker = lease.executor_state(self.session_id)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "worker": worker, "fragments": fragments}

    async def session_events(self, message: dict[str, Any]) -> None:
        events = [e for e in message.get("events", []) if e["seq"] > self.last_seq]
        if not events:
            return
        if events[0]["seq"] > self.last_seq + 1 and self.last_seq > 0:
            # We missed something (capacity drop, late join): rebuild from the database.
            await self.catch_up(self.last_seq)
            return
        payload = await database_sync_to_async(self._live_message)(events)
        await self.send_json(payload)

    async def session_chunks(self, message: dict[str, Any]) -> None:
        """Unsaved streamed text from the engine: rendered here, with no database query (issue 15)."""
        chunks = message.get("chunks", [])
        if tail_needs_text(self.turn_text, chunks):  # a turn this page has not seen stream yet: read it once
            fragments = await database_sync_to_async(tail_fragments)(self.turn_text, chunks, load=True)
        else:
            fragments = tail_fragments(self.turn_text, chunks)
        if fragments:
            await self.send_json(
                {"type": "events", "live": True, "last_seq": self.last_seq, "status": "", "fragments": fragments}
            )

    def _live_message(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        fragments, last_seq, status = render_fragments(self.session_id, events, self.turn_text)
        self.last_seq = max(self.last_seq, last_seq)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "fragments": fragments}


class ConversationConsumer(SessionConsumer):
    """The chat page's WebSocket: the same protocol (catch_up by sequence, pushes) over the conversation's
    run, rendering chat fragments (orchestration.conversations.live). Owner only."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        session_id = None
        if user is not None and user.is_authenticated:
            session_id = await self._conversation_session(conversation_id, user.pk)
        if session_id is None:
            await self.close(code=4403)
            return
        self.conversation_id = conversation_id
        self.session_id = session_id
        self.last_seq = 0
        self.turn_text: TurnTextCache = {}
        self.group = ev.group_name(self.session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._accept_counted()

    @database_sync_to_async
    def _conversation_session(self, conversation_id: int, user_id: int) -> int | None:
        from orchestration.models import Conversation

        return (
            Conversation.objects.filter(pk=conversation_id, project__owner_id=user_id)
            .values_list("session_id", flat=True)
            .first()
        )

    def _catch_up_message(self, after: int) -> dict[str, Any]:
        from orchestration.conversations.live import render_fragments as chat_fragments

        events = [ev.serialize(e) for e in ev.events_after(self.session_id, after)]
        fragments, last_seq, status = chat_fragments(self.conversation_id, events, full_text=True)
        self.last_seq = max(self.last_seq, last_seq, after)
        worker = lease.executor_state(self.session_id)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "worker": worker, "fragments": fragments}

    def _live_message(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        from orchestration.conversations.live import render_fragments as chat_fragments

        fragments, last_seq, status = chat_fragments(self.conversation_id, events)
        self.last_seq = max(self.last_seq, last_seq)
        return {"type": "events", "last_seq": self.last_seq, "status": status, "fragments": fragments}
