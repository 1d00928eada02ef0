"""The chat page's live updates: events of the conversation's run -> server-rendered fragments.

Used by the page (initial render), the WebSocket consumer (pushes and catch-up by sequence number) and
the htmx views. Fragment operations the page's chat.js applies, in order:
  {"op": "upsert", "id", "html"}  replace the element with this id, or append it to the transcript
  {"op": "text", "id", "text"}    append plain text to a streaming reply (never parsed as HTML)
  {"op": "settext", "id", "text"} set a streaming reply's whole text (catch-up after a reconnect)
  {"op": "remove", "id"}          remove an element (a finished stream, a superseded message)
  {"op": "controls", "html"}      replace the status line and controls
Every HTML fragment is rendered from the database by a template (model text through render_markdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.template.loader import render_to_string

from orchestration import events as ev
from orchestration.conversations.models import Conversation, Message
from orchestration.models import ACTIVE_STATUSES, Turn, WritingSession

if TYPE_CHECKING:
    from orchestration.live import SessionHead


def message_html(message: Message) -> str:
    return render_to_string("conversations/partials/message.html", {"message": message})


def stream_html(turn: Turn, text: str = "", purpose: str = "reply") -> str:
    from orchestration.conversations.pipeline import stage_label

    context = {"turn": turn, "text": text, "purpose": purpose, "stage": stage_label(turn.recipe)}
    return render_to_string("conversations/partials/stream.html", context)


def controls_html(conversation: Conversation, session: WritingSession) -> str:
    return render_to_string(
        "conversations/partials/controls.html",
        {"conversation": conversation, "session": session, "active": session.status in ACTIVE_STATUSES},
    )


def streaming_turns(session_id: int) -> list[tuple[Turn, str]]:
    """Calls still streaming with the text they have written so far (rebuilt from their chunk events)."""
    turns = list(Turn.objects.filter(session_id=session_id, status=Turn.TurnStatus.STREAMING).order_by("pk"))
    texts = ev.streamed_text([t.pk for t in turns])
    return [(turn, texts.get(turn.pk, "")) for turn in turns]


def render_fragments(
    conversation_id: int, events: list[dict[str, Any]], *, full_text: bool = False, head: SessionHead | None = None
) -> tuple[list[dict[str, Any]], int, str]:
    """(fragments, last seq, run status) for serialized events (events.serialize).

    `head`, if given, is set to the run's last_seq and status as read here (see live.render_fragments).
    """
    conversation = Conversation.objects.select_related("session", "project").get(pk=conversation_id)
    session = conversation.session
    if head is not None:
        head.last_seq, head.status = session.last_seq, session.status
    fragments: list[dict[str, Any]] = []
    last_seq = 0
    texts: dict[int, list[str]] = {}
    message_ids = [e["payload"].get("message_id") for e in events if e["kind"] in ("message", "superseded")]
    wanted = [i for i in message_ids if isinstance(i, int)]
    messages = {m.pk: m for m in Message.objects.filter(pk__in=wanted, conversation_id=conversation_id)}
    for event in events:
        last_seq = max(last_seq, event["seq"])
        kind, payload, turn_id = event["kind"], event["payload"], event.get("turn_id")
        if kind == "turn_started" and turn_id:
            turn = Turn.objects.filter(pk=turn_id).first()
            if turn is not None and turn.status == Turn.TurnStatus.STREAMING:
                fragments.append(
                    {
                        "op": "upsert",
                        "id": f"stream-{turn_id}",
                        "html": stream_html(turn, "", payload.get("purpose", "reply")),
                    }
                )
        elif kind == "chunk" and turn_id:
            texts.setdefault(turn_id, []).append(payload.get("text", ""))
            fragments.append({"op": "text", "id": f"stream-{turn_id}", "text": payload.get("text", "")})
        elif kind == "turn_finished" and turn_id:
            fragments.append({"op": "remove", "id": f"stream-{turn_id}"})
        elif kind == "message":
            message = messages.get(payload.get("message_id"))
            if message is not None and not message.superseded:
                fragments.append({"op": "upsert", "id": f"message-{message.pk}", "html": message_html(message)})
        elif kind == "superseded":
            for message_id in payload.get("message_ids", []):
                fragments.append({"op": "remove", "id": f"message-{message_id}"})
    if full_text:
        # A reconnecting page may have missed the start of a stream: give it the whole text so far.
        for turn, text in streaming_turns(session.pk):
            fragments.append({"op": "upsert", "id": f"stream-{turn.pk}", "html": stream_html(turn, text)})
        fragments = [f for f in fragments if f["op"] != "text"]
    fragments.append({"op": "controls", "html": controls_html(conversation, session)})
    return fragments, last_seq, session.status
