"""A conversation call's turn, one place for each step the triage calls (`runner.py`) and the pipeline stages
(`pipeline.py`) share: what a planned call carries (`Prepared`, `Attempt`), starting its turn (numbered,
created and reserved), settling it (charged, claimed, added to the run's totals), stopping it, and the
transcript its messages are written to.

Each step runs inside the caller's fenced transaction or opens one, so a call re-run after a crash never
creates a turn, a charge or a message twice (the turn's status guards the settlement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F

from orchestration import engine
from orchestration import events as ev
from orchestration import turns as engine_turns
from orchestration.conversations.models import Conversation, Message, MessageStatus
from orchestration.lease import fence
from orchestration.models import Agent, LLMModel, Turn, WritingSession, turn_reservation_key

if TYPE_CHECKING:
    from decimal import Decimal

    from orchestration.conversations import flow
    from orchestration.conversations.pipeline import StageCall
    from orchestration.providers.base import ModelRequest, StreamEnd, ToolCall, Usage


@dataclass
class Prepared:
    """A planned call: the run, its conversation, the active team and the call (a triage `flow.Call` or a
    pipeline `StageCall`)."""

    session: WritingSession
    conversation: Conversation
    agents: list[Agent]
    call: flow.Call | StageCall
    messages: list[Message] = field(default_factory=list)  # flow.visible_messages, read when the call was planned


@dataclass
class Attempt:
    """One attempt of a call: its turn, the request sent, and what streamed back so far."""

    turn_id: int
    request: ModelRequest
    received: list[str] = field(default_factory=list)
    thought: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The reply's text streamed so far."""
        return "".join(self.received)

    @property
    def thinking(self) -> str:
        """The model's thinking streamed so far."""
        return "".join(self.thought)


@dataclass(frozen=True)
class TurnStart:
    """What `start_turn` writes for one call: the turn's slot, recipe and output kind, the prompt's notes and
    its estimated input tokens, the output cap (tokens; the worst case is reserved for both), the ledger
    description and the call's own fields of the turn_started event (after agent, model and attempt)."""

    slot: str
    recipe: str
    output_kind: str
    reasoning_output: str
    notes: list[str]
    input_tokens: int
    max_tokens: int
    description: str
    event: dict[str, Any]


def start_turn(
    session: WritingSession, agent: Agent, model: LLMModel, start: TurnStart, *, owner: str, outbox: ev.Outbox | None
) -> int | str:
    """Number the attempt from the run's last turn (the same slot not done: the next attempt of that round,
    else a new round), create the Turn, reserve its worst case in credits under `turn_reservation_key`, set
    the run's current round and announce turn_started, in one fenced transaction.

    Returns the turn's id, or engine.OUT_OF_CREDITS_DETAIL (nothing written). Raises LeaseLost."""
    from billing.pricing import credits_for_usage

    worst_case = credits_for_usage(
        model=model, input_tokens=start.input_tokens, cached_tokens=0, output_tokens=start.max_tokens
    )
    last = Turn.objects.filter(session=session).order_by("-round", "-attempt").first()
    if last is not None and last.slot == start.slot and last.status not in Turn.DONE_STATUSES:
        round_number, attempt = last.round, last.attempt + 1  # the same call again (retry, crash, stop)
    else:
        round_number, attempt = (last.round if last else 0) + 1, 1
    with transaction.atomic():
        fence(session.pk, owner)
        fields = engine_turns.TurnFields(
            round_number, attempt, start.slot, start.recipe, start.output_kind, start.reasoning_output, start.notes
        )
        turn_id = engine_turns.create_reserved_turn(session, agent, model, fields, worst_case, start.description)
        if turn_id is None:
            return engine.OUT_OF_CREDITS_DETAIL
        WritingSession.objects.filter(pk=session.pk).update(current_round=round_number)
        payload = {"agent_id": agent.pk, "agent_name": agent.name, "model": model.display_name, "attempt": attempt}
        started = payload | start.event
        ev.append_event(session_id=session.pk, kind="turn_started", turn_id=turn_id, payload=started, outbox=outbox)
    return turn_id


@dataclass(frozen=True)
class Settled:
    """A settled turn: the run as locked for it and the credits charged."""

    session: WritingSession
    charged: int


def settle_turn(
    session_id: int,
    turn_id: int,
    model: LLMModel,
    end: StreamEnd,
    timing: tuple[int, int | None],
    *,
    owner: str,
    label: str,
    fields: dict[str, Any],
) -> Settled | None:
    """Inside the caller's transaction: fence, lock the run's row, settle the turn's reservation for its
    usage, claim the turn (only while it is still streaming) with its usage, charge, timing (latency, time
    to first token, in milliseconds) and `fields` (status, text...), and add the usage to the run's totals.
    The ledger entry reads "Conversation “<title>”: <label>".

    Returns the Settled run, or None when an earlier run of the call saved it (the transaction is then
    marked for rollback: the caller writes nothing more). Raises LeaseLost."""
    from billing.services import settle_credits

    usage = end.usage
    credits, cost = engine_turns.price(model, usage)
    fence(session_id, owner)
    session = WritingSession.objects.select_for_update().select_related("project__owner").get(pk=session_id)
    charged = settle_credits(
        user=session.project.owner,
        reservation_key=turn_reservation_key(turn_id),
        actual=credits,
        key=f"turn:{turn_id}:settle",
        description=f"Conversation “{session.title}”: {label}",
    )
    claimed = Turn.objects.filter(pk=turn_id, status=Turn.TurnStatus.STREAMING).update(
        **fields, **engine_turns.usage_fields(end, timing, charged, cost)
    )
    if not claimed:  # saved by an earlier run of this call
        transaction.set_rollback(True)
        return None
    _add_to_totals(session_id, usage, charged, cost)
    return Settled(session, charged)


def _add_to_totals(session_id: int, usage: Usage, charged: int, cost: Decimal) -> None:
    """Add a settled turn's tokens, credits charged and provider cost (USD) to its run's totals."""
    WritingSession.objects.filter(pk=session_id).update(
        input_tokens=F("input_tokens") + usage.input_tokens,
        cached_tokens=F("cached_tokens") + usage.cached_input_tokens,
        output_tokens=F("output_tokens") + usage.output_tokens,
        reasoning_tokens=F("reasoning_tokens") + usage.reasoning_tokens,
        credits_used=F("credits_used") + charged,
        provider_cost=F("provider_cost") + cost,
    )


def finished_events(
    settled: Settled, turn_id: int, status: str, end: StreamEnd, transcript: Transcript
) -> list[ev.NewEvent]:
    """The events of a settled turn, in order: turn_finished, the transcript's messages, the run's totals."""
    payload = {"status": status, "credits": settled.charged, "stop_reason": end.stop_reason}
    totals = {"credits": settled.session.credits_used + settled.charged}
    return [ev.NewEvent("turn_finished", payload, turn_id), *transcript.events, ev.NewEvent("totals", totals)]


def stop_turn(prepared: Prepared, model: LLMModel, attempt: Attempt, *, owner: str, outbox: ev.Outbox | None) -> bool:
    """Inside the caller's transaction: the user pressed Stop, so the turn (if still streaming) is charged for
    what it used, its text so far kept, and it ends cancelled. Returns False when it was no longer streaming
    (nothing to write). Raises LeaseLost."""
    session_id = prepared.session.pk
    fence(session_id, owner)
    WritingSession.objects.select_for_update().filter(pk=session_id).first()
    if not Turn.objects.filter(pk=attempt.turn_id, status=Turn.TurnStatus.STREAMING).exists():
        return False
    engine_turns.abandon_turn(
        session_id,
        attempt.turn_id,
        model,
        attempt.text,
        attempt.request,
        Turn.TurnStatus.CANCELLED,
        engine_turns.USER_STOP,
        reasoning=attempt.thinking,
        owner=owner,
        outbox=outbox,
    )
    return True


class Transcript:
    """Appends messages to the conversation (positions allocated under the run's row lock) and collects
    the events that announce them."""

    def __init__(self, conversation_id: int, exchange: int, turn_id: int | None) -> None:
        from orchestration.conversations.services import next_position

        self.conversation_id = conversation_id
        self.exchange = exchange
        self.turn_id = turn_id
        self.position = next_position(conversation_id)
        self.events: list[ev.NewEvent] = []
        self.final = False  # a final answer (or final note) was added

    def add(
        self,
        *,
        role: str,
        agent: Agent | None,
        content: str = "",
        status: str = MessageStatus.COMPLETED,
        data: dict[str, Any] | None = None,
    ) -> Message:
        """Write the next message of the exchange (`data` is its JSON: "final" marks the reply's end) and
        queue its event."""
        message = Message.objects.create(
            conversation_id=self.conversation_id,
            exchange=self.exchange,
            position=self.position,
            role=role,
            status=status,
            agent=agent,
            agent_name=agent.name if agent else "",
            content=content,
            data=data or {},
            turn_id=self.turn_id,
        )
        self.position += 1
        self.final = self.final or bool(message.data.get("final"))
        self.events.append(ev.NewEvent("message", {"message_id": message.pk, "role": role}, self.turn_id))
        return message

    def updated(self, message: Message) -> None:
        """Queue the event of a message changed in place (an agent-as-tool question answered or stopped)."""
        self.events.append(ev.NewEvent("message", {"message_id": message.pk, "role": message.role}, self.turn_id))
