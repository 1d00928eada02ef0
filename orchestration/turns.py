"""A turn's bookkeeping, from its start to its end, exactly once.

begin_turn builds the prompt, creates the turn and reserves its worst-case credits; complete_turn saves a
streamed reply with its evaluation, usage, charge, version and events; abandon_turn keeps what an interrupted
turn streamed and charges what it consumed; fail_turn ends a turn an unexpected exception left streaming;
recover_interrupted_turns ends the turns a lost executor left streaming. Every write is fenced by the lease
when an owner is given (raises LeaseLost if another executor took over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from atelier.core import metrics
from atelier.core.sql import insert_rows, update_row
from orchestration import events as ev
from orchestration import services
from orchestration.drive_state import CallOutcome, DriveCache
from orchestration.flows import AgentCall
from orchestration.flows.base import note_done_turn
from orchestration.lease import LeaseLost, fence, fenced_update
from orchestration.models import (
    Agent,
    DocumentVersion,
    LLMModel,
    Status,
    Turn,
    WritingSession,
    turn_reservation_key,
)
from orchestration.versions import record_version

if TYPE_CHECKING:
    from orchestration.evaluation import Evaluation
    from orchestration.prompts import PromptParts
    from orchestration.providers import ModelRequest, ProviderError, StreamEnd
    from orchestration.providers.base import Usage
    from orchestration.reasoning import ReasoningPlan

logger = logging.getLogger(__name__)

USER_STOP = "Stopped by you."
# What an interrupted attempt says when the executor running it disappeared (crashed, killed, frozen or cut
# off): the next executor cannot tell these apart, so it says what it knows.
WORKER_LOST = (
    "The worker running this turn stopped responding (crashed, killed or frozen); another worker ran it again."
)
INTERNAL_ERROR = "An internal error interrupted this turn. It has been logged."


def recover_interrupted_turns(session: WritingSession, *, owner: str, outbox: ev.Outbox | None = None) -> None:
    """Turns left streaming by a lost executor: mark incomplete and release their reservation.

    Only the lease holder does this (fenced), so a stale worker never marks the live owner's turn.
    """
    from billing.services import release_credits

    stale = Turn.objects.filter(session=session, status=Turn.TurnStatus.STREAMING)
    for turn in stale:
        with transaction.atomic():
            fence(session.pk, owner)
            text = ev.streamed_text([turn.pk]).get(turn.pk, "")
            reasoning = ev.streamed_text([turn.pk], kind="reasoning").get(turn.pk, "")
            updated = Turn.objects.filter(pk=turn.pk, status=Turn.TurnStatus.STREAMING).update(
                status=Turn.TurnStatus.INCOMPLETE,
                output_text=text,
                reasoning=reasoning,
                error=WORKER_LOST,
                finished_at=timezone.now(),
            )
            if updated:
                release_credits(
                    user=session.project.owner,
                    reservation_key=turn_reservation_key(turn.pk),
                    key=f"turn:{turn.pk}:release",
                )
                ev.append_event(
                    session_id=session.pk,
                    kind="turn_finished",
                    payload={"status": Turn.TurnStatus.INCOMPLETE},
                    turn_id=turn.pk,
                    outbox=outbox,
                )


def _criteria(agent: Agent) -> list[tuple[str, str, float]]:
    return [(c.name, c.description, c.weight) for c in agent.criteria.all()]


def _feedback_for(session: WritingSession, agent: Agent, cache: DriveCache | None = None) -> list[tuple[str, str]]:
    """The latest evaluation comments of each *other* agent, latest first: what matters for this turn.

    Read once per drive (`cache`), then kept up to date by complete_turn.
    """
    cache = DriveCache() if cache is None else cache
    if cache.feedback is None:
        latest: dict[int, tuple[int, str, str]] = {}
        turns = (
            Turn.objects.filter(
                session=session, kind=Turn.Kind.AGENT, status=Turn.TurnStatus.COMPLETED, agent_id__isnull=False
            )
            .exclude(feedback="")
            .order_by("-pk")
            .values_list("pk", "agent_id", "agent_name", "feedback")[:50]
        )
        for pk, agent_id, name, feedback in turns:
            latest.setdefault(agent_id, (pk, name, feedback))
        cache.feedback = latest
    others = sorted((v for k, v in cache.feedback.items() if k != agent.pk), reverse=True)
    return [(name, feedback) for _, name, feedback in others]


def begin_turn(
    session: WritingSession,
    agent: Agent,
    model: LLMModel,
    round_number: int,
    attempt: int,
    call: AgentCall | None = None,
    context_window: int | None = None,
    *,
    owner: str,
    cache: DriveCache | None = None,
    outbox: ev.Outbox | None = None,
) -> tuple[int, ModelRequest, int] | CallOutcome:
    """Build the prompt, create the turn (next attempt) and reserve its worst-case credits.

    One transaction of five statements: the fenced session UPDATE (lease + the event's number), the turn,
    the balance, the ledger entry, the turn_started event. `cache` (the drive's) saves re-reading the
    references and the other agents' feedback, and keeps the reserved amount for the settlement; when its
    `round_change` is set (a one-call step that starts a new round), the same UPDATE moves the session to that
    round and the round's status event goes first.

    Returns (turn id, ModelRequest, estimated prompt tokens), or a CallOutcome: "too_large" when the prompt
    cannot fit `context_window` (default: the model's), "out_of_credits" when the reservation is refused,
    "held" when a Stop or Pause was pressed (nothing written: the engine then stops or pauses the run).
    Raises LeaseLost if `owner` lost the lease.
    """
    from billing.pricing import credits_for_usage
    from orchestration.prompts import PromptTooLarge
    from orchestration.reasoning import plan_for_agent

    call = call or AgentCall(agent_id=agent.pk)
    # Thinking shares the output allowance (and so the context window): fit and reserve for the total.
    plan = plan_for_agent(agent, model)
    try:
        prompt = _build_prompt(session, agent, model, round_number, call, context_window, plan, cache)
    except PromptTooLarge as error:
        return CallOutcome("too_large", None, f"{model.display_name}: {error}")
    worst_case = credits_for_usage(
        model=model, input_tokens=prompt.estimated_input_tokens, cached_tokens=0, output_tokens=plan.max_tokens
    )
    begun = _TurnStart(session, agent, model, round_number, attempt, call)
    round_change = cache.round_change if cache is not None else None
    turn_id = _create_and_reserve(begun, prompt, plan, worst_case, round_change, owner=owner, outbox=outbox)
    if isinstance(turn_id, CallOutcome):
        return turn_id
    if cache is not None:
        cache.reserved[turn_id] = worst_case
        cache.round_change = None
    return turn_id, _model_request(begun, prompt, plan), prompt.estimated_input_tokens


@dataclass(frozen=True)
class _TurnStart:
    """The turn being begun: whose call, on which model, in which round, as which attempt."""

    session: WritingSession
    agent: Agent
    model: LLMModel
    round_number: int
    attempt: int
    call: AgentCall


def _material(
    session: WritingSession, agent: Agent, call: AgentCall, instruction: str | None, cache: DriveCache | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str | None]:
    """What the call reads besides the document: (feedback, references, instruction) by its recipe."""
    from orchestration.flows import PIPELINE_RECIPES, Recipe, call_material, critique_feedback, review_feedback
    from orchestration.flows.pipeline import material as pipeline_material
    from orchestration.flows.planned import PLANNED_RECIPES

    if call.recipe in PIPELINE_RECIPES:  # numbered source passages and the earlier stages' output
        stage = pipeline_material(session, call)
        return stage.feedback, stage.references, stage.instruction or instruction
    if call.recipe in (Recipe.SYNTHESIZE, Recipe.MODERATE):
        feedback = review_feedback(call.recipe, call.inputs)
    elif call.recipe == Recipe.CRITIQUE:
        # Reviewers work independently, on the same document; a roundtable critic after round 1 also reads how
        # the moderator resolved the previous round's issues (no query for the first round or for editors).
        feedback = critique_feedback(session.flow, call.inputs)
    elif call.recipe in PLANNED_RECIPES:
        feedback = call_material(call)  # its task, then only the results it depends on
    else:
        feedback = _feedback_for(session, agent, cache)
    return feedback, _references(session, cache), instruction


def _references(session: WritingSession, cache: DriveCache | None) -> list[tuple[str, str]]:
    """The session's references as (title, content), read once per drive (`cache`)."""
    if cache is not None and cache.references is not None:
        return cache.references
    references = list(session.references.values_list("title", "content"))
    if cache is not None:
        cache.references = references
    return references


def _build_prompt(
    session: WritingSession,
    agent: Agent,
    model: LLMModel,
    round_number: int,
    call: AgentCall,
    context_window: int | None,
    plan: ReasoningPlan,
    cache: DriveCache | None,
) -> PromptParts:
    """The call's prompt, fitted to `context_window` (default: the model's). Raises PromptTooLarge."""
    from orchestration.flows import recipe_text
    from orchestration.prompts import PromptInputs, build_prompt

    recipe = recipe_text(call.recipe)
    feedback, references, instruction = _material(session, agent, call, recipe.instruction, cache)
    return build_prompt(
        PromptInputs(
            role_prompt=agent.role_prompt,
            agent_name=agent.name,
            role=agent.role,
            criteria=_criteria(agent),
            brief=session.brief,
            references=references,
            document=session.document,
            feedback=feedback,
            human_note=session.human_note,
            round_number=round_number,
            max_rounds=session.max_rounds,
            context_window=context_window or model.context_window,
            max_output_tokens=plan.max_tokens,
            flow_rules=recipe.rules,
            evaluation_lead=recipe.evaluation_lead,
            feedback_heading=recipe.inputs_heading,
            instruction=instruction,
            no_document=recipe.no_document,
            show_document=recipe.show_document,
        )
    )


def _create_and_reserve(
    begun: _TurnStart,
    prompt: PromptParts,
    plan: ReasoningPlan,
    worst_case: int,
    round_change: int | None = None,
    *,
    owner: str,
    outbox: ev.Outbox | None,
) -> int | CallOutcome:
    """Create the turn, reserve `worst_case` credits and journal its start, in one fenced transaction.
    `round_change`: the round the session moves to with this turn (its status event first), if any.

    Returns the turn's id, or (nothing written) CallOutcome "out_of_credits" when the reservation is refused,
    "held" when the fenced UPDATE finds a Stop or Pause pressed (the drive may not have read the row since)."""
    session, agent, model, call = begun.session, begun.agent, begun.model, begun.call
    # No savepoint of its own: run by itself it is the transaction; run after a deferred completion
    # (engine._between_steps) it is inside a savepoint that a refusal rolls back to, keeping the saved turn.
    with transaction.atomic(savepoint=False):
        # What the flow journals with the call (the planned flow's routing decision, a repair's reason).
        journal = list(call.context.get("journal", ()))
        moved = {"current_round": round_change} if round_change is not None else None
        # First: takes the session's row lock; reserves the numbers of the status, journal and turn_started events.
        head = 1 if moved else 0
        row = fenced_update(session.pk, owner, seqs=head + 1 + len(journal), set_fields=moved)
        if row["status"] in (Status.STOPPING, Status.PAUSING):
            transaction.set_rollback(True)
            return CallOutcome("held")
        seq = row["last_seq"] - len(journal) - head
        fields = TurnFields(
            begun.round_number, begun.attempt, call.slot, call.recipe, call.output, plan.output, prompt.notes
        )
        description = f"{session.title}: round {begun.round_number}, {agent.name}"
        # The turn was created just now: its reservation key cannot have been used (new_key).
        turn_id = create_reserved_turn(session, agent, model, fields, worst_case, description, new_key=True)
        if turn_id is None:
            return CallOutcome("out_of_credits")
        started = _started_event(begun, turn_id)
        journalled = [ev.NewEvent(kind, payload, turn_id) for kind, payload in journal]
        if moved:
            session.status = row["status"]
            journalled.insert(0, ev.NewEvent("status", services.status_payload(session)))
        ev.insert_events(session_id=session.pk, first_seq=seq, events=[*journalled, started], outbox=outbox)
    return turn_id


@dataclass(frozen=True)
class TurnFields:
    """Where a new turn stands in the run and what it is for (the Turn's own fields)."""

    round_number: int
    attempt: int
    slot: str
    recipe: str
    output_kind: str
    reasoning_output: str  # ReasoningOutput of the model, or "" when no reasoning was asked for
    notes: list[str]  # what fitting the prompt cut, shown on the turn


def create_reserved_turn(
    session: WritingSession,
    agent: Agent,
    model: LLMModel,
    fields: TurnFields,
    worst_case: int,
    description: str,
    *,
    new_key: bool = False,
) -> int | None:
    """Inside the caller's fenced transaction: create the streaming turn and reserve `worst_case` credits for
    it under turn_reservation_key (`description` on the ledger; `new_key` as billing.reserve_credits).

    Returns the turn's id, or None when the balance refuses the reservation: the transaction is then marked for
    rollback (nothing written). The one place both the engine and the conversations start a turn."""
    from billing.services import InsufficientCredits, reserve_credits

    row = {
        "session_id": session.pk,
        "round": fields.round_number,
        "agent_id": agent.pk,
        "agent_name": agent.name,
        "attempt": fields.attempt,
        "model_used": model.model_id,
        "prompt_notes": "\n".join(fields.notes),
        "slot": fields.slot,
        "recipe": fields.recipe,
        "output_kind": fields.output_kind,
        "reasoning_output": fields.reasoning_output,
    }
    turn_id = insert_rows(Turn, [row])[0]  # a plain INSERT (atelier.core.sql), one per call (issue 15)
    try:
        reserve_credits(
            user=session.project.owner,
            amount=worst_case,
            key=turn_reservation_key(turn_id),
            description=description,
            session_id=session.pk,  # the settlement and release inherit it: usage by session
            turn_id=turn_id,
            new_key=new_key,
        )
    except InsufficientCredits:
        transaction.set_rollback(True)
        return None
    return turn_id


def _started_event(begun: _TurnStart, turn_id: int) -> ev.NewEvent:
    """The turn_started event: who, on which model, in which round and slot, as which attempt."""
    return ev.NewEvent(
        "turn_started",
        turn_id=turn_id,
        payload={
            "round": begun.round_number,
            "agent_id": begun.agent.pk,
            "agent_name": begun.agent.name,
            "model": begun.model.display_name,
            "attempt": begun.attempt,
            "slot": begun.call.slot,
            "phase": begun.call.phase,
        },
    )


def _model_request(begun: _TurnStart, prompt: PromptParts, plan: ReasoningPlan) -> ModelRequest:
    """What the provider is sent for this turn: the prompt, the output allowance, the thinking plan."""
    session, agent, call = begun.session, begun.agent, begun.call
    metadata = {
        "session_id": session.pk,
        "round": begun.round_number,
        "agent_name": agent.name,
        "role": agent.role,
        "criteria": [c[0] for c in _criteria(agent)],
        "brief": session.brief,
        "recipe": call.recipe,
        "slot": call.slot,
        "task": call.task,
    }
    return request_for(begun.model, agent, prompt, plan, metadata)


def request_for(
    model: LLMModel, agent: Agent, prompt: PromptParts, plan: ReasoningPlan, metadata: dict[str, Any]
) -> ModelRequest:
    """The provider request for `prompt`: the plan's output allowance and thinking, the agent's temperature.

    `metadata`: what the request carries for logs and the Demo provider (session_id, round, agent_name...)."""
    from orchestration.providers import ModelRequest

    return ModelRequest(
        provider=model.provider,
        model_id=model.model_id,
        system=prompt.system,
        user=prompt.user,
        max_tokens=plan.max_tokens,
        temperature=agent.temperature,
        reasoning=plan.reasoning,
        thinking_budget=plan.thinking_budget,
        reasoning_effort=plan.reasoning_effort,
        metadata=metadata,
    )


def complete_turn(
    *,
    session: WritingSession,
    turn_id: int,
    agent: Agent,
    model: LLMModel,
    text: str,
    end: StreamEnd,
    timing: tuple[int, int | None],  # (latency, time to first token) in milliseconds
    call: AgentCall,
    reasoning: str = "",
    owner: str,
    cache: DriveCache | None = None,
    unsaved: list[ev.NewEvent] | None = None,
    outbox: ev.Outbox | None = None,
) -> str | None:
    """The engine's one path for completing a streamed turn: saves the turn, its evaluation, usage, charge
    (settled against its reservation), version and events in one fenced transaction, exactly once. A reply
    that did not end normally (cut off, refused, filtered: docs/providers.md) is saved with its stop reason
    and the provider's words, charged as reported, and never becomes a version, a score or feedback.

    `text` is the reply only; `reasoning` (the model's thinking) is saved beside it and never parsed,
    versioned or passed on. Reasoning tokens are part of `end.usage.output_tokens` and billed with them.
    `session` is the drive's copy (its document is the latest version's content); `unsaved` are the turn's
    last chunk events, saved in this transaction. Six statements in the steady state (issue 15): the fenced
    session UPDATE (lease, event numbers, totals, document), the turn claimed before anything is charged,
    the balance, the settlement, the version, the events. Returns the turn's status, None if already saved;
    raises LeaseLost if `owner` lost the lease. `outbox`: where its committed events go (events.Outbox).
    """
    usage, reply = end.usage, _read_reply(agent, model, text, end, call, reasoning)
    credits, cost = price(model, usage)
    held = cache.reserved.get(turn_id) if cache is not None else None
    charge_known = held is not None and credits <= held  # then the charge is the usage: fold it in now
    new_version, changes, totals = _session_update(session, call, end, reply, cost, credits if charge_known else None)
    payload = _finished_payload(reply, end, credits)
    events = [*(unsaved or []), ev.NewEvent("turn_finished", payload, turn_id)]
    events += [ev.NewEvent(kind, data, turn_id) for kind, data in reply.journal]
    seqs = len(events) + 1 + (1 if new_version else 0)  # + the version and the totals events
    # No savepoint of its own: it is its own transaction, or (deferred: engine._between_steps) the first work of
    # the phase's transaction, which a turn not claimed or a failure rolls back whole.
    with transaction.atomic(savepoint=False):
        # First the session row (the lease, like every fenced write, and the same lock order as before).
        row = fenced_update(session.pk, owner, seqs=seqs, set_fields=changes, add_fields=totals, returning=_RETURNED)
        # Claim before charging: only the executor that moves the turn out of streaming settles it (not
        # claimed: already saved by an earlier run of this step, or given up on meanwhile).
        if not _claim(turn_id, reply, end, timing, credits, cost):
            transaction.set_rollback(True)
            return None
        charged = _settle(session, turn_id, agent, row, credits, held, charge_known)
        payload["credits"] = charged
        if new_version:
            events.append(_record_new_version(session, turn_id, agent, reply.document, row, cache))
        events.append(_totals_event(row))
        ev.insert_events(session_id=session.pk, first_seq=row["last_seq"] - seqs + 1, events=events, outbox=outbox)
        # Counted once the turn is saved; no query (atelier/core/metrics.py).
        count = partial(metrics.turn_finished, provider=model.provider, model=model.model_id, status=reply.status)
        transaction.on_commit(partial(count, usage=usage, credits=charged, latency_ms=timing[0], ttft_ms=timing[1]))
    _apply_saved_row(session, changes, totals, row)
    _note_completed(session, cache, turn_id, agent, reply)
    return reply.status


def _note_completed(
    session: WritingSession, cache: DriveCache | None, turn_id: int, agent: Agent, reply: _Reply
) -> None:
    """Keep what the drive holds up to date with a saved turn: the flow's last finished turn on the session
    object, and in the drive's cache its reservation closed, its feedback the latest, the row current."""
    if reply.status in Turn.DONE_STATUSES:
        note_done_turn(session, (session.current_round, agent.pk))
    if cache is None:
        return
    cache.row_saved_by = turn_id
    cache.reserved.pop(turn_id, None)
    if reply.status == Turn.TurnStatus.COMPLETED and reply.evaluation.feedback and cache.feedback is not None:
        cache.feedback[agent.pk] = (turn_id, agent.name, reply.evaluation.feedback[:5000])


# What complete_turn's fenced session UPDATE returns: the totals after this turn, the round, and what only
# others change while a run is active (a Stop or a Pause: services.stop_session, pause_session).
_RETURNED = (
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "credits_used",
    "current_round",
    "status",
    "stop_reason",
)


def _apply_saved_row(
    session: WritingSession, changes: dict[str, str], totals: dict[str, int | Decimal], row: dict[str, Any]
) -> None:
    """Bring the drive's session object up to the row complete_turn just saved: the fields it set, the totals
    it added to, and what the UPDATE returned (the locked totals, the round, the status and stop reason).
    The engine then needs no read of its own after a one-call step (engine._after_step)."""
    for name, value in changes.items():
        setattr(session, name, value)
    for name, increment in totals.items():
        setattr(session, name, getattr(session, name) + increment)
    for name in _RETURNED:
        setattr(session, name, row[name])


def _session_update(
    session: WritingSession, call: AgentCall, end: StreamEnd, reply: _Reply, cost: Decimal, charge: int | None
) -> tuple[bool, dict[str, str], dict[str, int | Decimal]]:
    """(whether the reply is a new version, the session fields it sets, the totals it adds to).

    `charge`: the turn's credits when they are known to be its charge (within the reservation), else None."""
    usage = end.usage
    new_version = bool(
        end.outcome == "normal"
        and call.writes_document
        and reply.document.strip()
        and reply.document != session.document
    )
    changes = {"human_note": ""} if end.outcome == "normal" else {}
    if new_version:
        changes["document"] = reply.document
    totals: dict[str, int | Decimal] = {
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "provider_cost": cost,
    }
    if charge is not None:
        totals["credits_used"] = charge
    return new_version, changes, totals


def price(model: LLMModel, usage: Usage) -> tuple[int, Decimal]:
    """(credits charged for `usage`, what the provider charges for it in USD)."""
    from billing.pricing import credits_for_usage, provider_cost_usd

    counts = {"input_tokens": usage.input_tokens, "cached_tokens": usage.cached_input_tokens}
    credits = credits_for_usage(model=model, **counts, output_tokens=usage.output_tokens)
    return credits, provider_cost_usd(model=model, **counts, output_tokens=usage.output_tokens)


@dataclass
class _Reply:
    """A streamed reply as read: its answer and thinking, the document and evaluation it carries, its status."""

    answer: str
    reasoning: str
    document: str
    evaluation: Evaluation
    flow_result: dict[str, Any]
    journal: list[tuple[ev.EventKind, dict[str, Any]]]
    status: str
    error: str


def _read_reply(agent: Agent, model: LLMModel, text: str, end: StreamEnd, call: AgentCall, reasoning: str) -> _Reply:
    """Parse a normal reply for its document, evaluation and the flow's result; say why another is not used."""
    from orchestration.evaluation import Evaluation, split_reasoning
    from orchestration.flows import parse_result

    # OpenAI-compatible reasoning models stream <think>...</think> as content: the turn's reasoning, shown to
    # the owner, never the document, the evaluation or the next prompt.
    answer, thinking = split_reasoning(text)
    reasoning = "\n\n".join(part for part in (reasoning, thinking) if part)
    if end.outcome != "normal":
        status = Turn.TurnStatus.TRUNCATED if end.outcome == "truncated" else Turn.TurnStatus.REFUSED
        error = abnormal_end_message(model=model, agent=agent, end=end)
        return _Reply(answer, reasoning, "", Evaluation(raw=""), {}, [], status, error)
    document, evaluation, flow_result = parse_result(
        call.recipe,
        answer,
        [(c.name, c.weight) for c in agent.criteria.all()],
        call.inputs,
        call.passages,
        call=call,
    )
    journal = flow_result.pop("_events", [])  # the flow's journal entries about this reply
    return _Reply(answer, reasoning, document, evaluation, flow_result, journal, Turn.TurnStatus.COMPLETED, "")


def _finished_payload(reply: _Reply, end: StreamEnd, credits: int) -> dict[str, Any]:
    """The turn_finished event's payload (its credits replaced by the charge once settled)."""
    payload: dict[str, Any] = {
        "status": reply.status,
        "scores": reply.evaluation.scores,
        "overall": reply.evaluation.overall,
        "tier": reply.evaluation.tier,
        "credits": credits,
        "stop_reason": end.stop_reason,
        "usage_estimated": end.usage.estimated,
    }
    if reply.error:
        payload["error"] = reply.error
    return payload


def _claim(
    turn_id: int, reply: _Reply, end: StreamEnd, timing: tuple[int, int | None], credits: int, cost: Decimal
) -> bool:
    """Move the turn out of streaming with everything it produced; False if it was not streaming any more.

    One UPDATE of 22 fields, written plainly (atelier.core.sql.update_row): the ORM's compiling of it cost ten
    times the statement itself (issue 15)."""
    normal = end.outcome == "normal"
    fields = dict(
        status=reply.status,
        output_text=reply.answer,
        error=reply.error,
        scores=reply.evaluation.scores,
        overall_score=reply.evaluation.overall,
        parse_tier=reply.evaluation.tier if normal else "",
        evaluation_raw=reply.evaluation.raw[:20000],
        feedback=reply.evaluation.feedback[:5000],
        result=reply.flow_result,
        reasoning=reply.reasoning,
        **usage_fields(end, timing, credits, cost),
    )
    streaming = {"id": turn_id, "status": Turn.TurnStatus.STREAMING}
    return update_row(Turn, where=streaming, set_fields=fields) is not None


def usage_fields(end: StreamEnd, timing: tuple[int, int | None], credits: int, cost: Decimal) -> dict[str, Any]:
    """The Turn fields a settled reply sets from how it ended: stop reason, token counts, `credits` charged,
    `cost` (the provider's, USD), `timing` ((latency, time to first token) in ms) and the end time."""
    usage = end.usage
    return {
        "stop_reason": end.stop_reason[:40],
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "usage_estimated": usage.estimated,
        "reasoning_tokens": usage.reasoning_tokens,
        "credits": credits,
        "provider_cost": cost,
        "latency_ms": timing[0],
        "ttft_ms": timing[1],
        "finished_at": timezone.now(),
    }


def _settle(
    session: WritingSession,
    turn_id: int,
    agent: Agent,
    row: dict[str, Any],
    credits: int,
    held: int | None,
    charge_known: bool,
) -> int:
    """Charge the turn against its reservation: the credits charged (`row`'s credits_used kept up to date).

    Settling is idempotent on its key, and a reservation closes once: a replay charges nothing."""
    from billing.services import settle_credits

    charged = settle_credits(
        user=session.project.owner,
        reservation_key=turn_reservation_key(turn_id),
        actual=credits,
        key=f"turn:{turn_id}:settle",
        description=f"{session.title}: round {row['current_round']}, {agent.name}",
        session_id=session.pk,
        turn_id=turn_id,
        held=held,
    )
    if not charge_known or charged != credits:  # rare: usage above the reservation, or no reservation known
        Turn.objects.filter(pk=turn_id).update(credits=charged)
        WritingSession.objects.filter(pk=session.pk).update(
            credits_used=F("credits_used") + (charged - credits if charge_known else charged)
        )
        row["credits_used"] += charged - credits if charge_known else charged
    return charged


def _record_new_version(
    session: WritingSession, turn_id: int, agent: Agent, document: str, row: dict[str, Any], cache: DriveCache | None
) -> ev.NewEvent:
    """Record the reply's document as the session's next version: its version event."""
    if cache is None or cache.last_version is None:
        latest = DocumentVersion.objects.filter(session_id=session.pk).order_by("-number")
        last_number = latest.values_list("number", flat=True).first() or 0
    else:
        last_number = cache.last_version
    version = record_version(
        session=session,
        content=document,
        turn=Turn(pk=turn_id, session_id=session.pk),
        note=f"Round {row['current_round']} · {agent.name}",
        previous=(last_number, session.document),
        save_document=False,  # written by the fenced UPDATE above
    )
    if cache is not None:
        cache.last_version = version.number
    return ev.NewEvent("version", {"number": version.number, "change_ratio": version.change_ratio})


def _totals_event(row: dict[str, Any]) -> ev.NewEvent:
    """The session's totals as updated under the row lock: the locked values plus this turn."""
    return ev.NewEvent(
        "totals",
        {
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "reasoning_tokens": row["reasoning_tokens"],
            "credits": row["credits_used"],
        },
    )


def abnormal_end_message(*, model: LLMModel, agent: Agent, end: StreamEnd) -> str:
    """What the turn's card says about a reply that did not end normally, in the provider's words where given."""
    from orchestration.providers.base import PROVIDER_LABELS

    provider = PROVIDER_LABELS.get(model.provider, model.provider)
    reason = end.stop_reason or "none"
    kept = "The document was kept as it was; the session carries on with the next agent."
    words = f" {provider} said: “{end.stop_detail}”." if end.stop_detail else ""
    if reason in ("max_tokens", "length"):
        return (
            f"The reply was cut off at {agent.name}'s output limit of {agent.max_output_tokens:,} tokens "
            f"(stop reason “{reason}”). {kept} Raise the agent's max output tokens for a document this long."
        )
    if reason == "model_context_window_exceeded":
        return f"The reply filled {model.display_name}'s context window (stop reason “{reason}”). {kept}"
    if reason == "refusal":
        return f"{model.display_name} refused this turn (stop reason “refusal”).{words} {kept}"
    if reason == "content_filter":
        return f"{provider}'s content filter stopped this reply (finish reason “content_filter”).{words} {kept}"
    return (
        f"{model.display_name} stopped with “{reason}”, which Atelier does not ask for: the reply is unfinished."
        f"{words} {kept}"
    )


def abandon_turn(
    session_id: int,
    turn_id: int,
    model: LLMModel,
    text: str,
    request: ModelRequest,
    status: str,
    error: str,
    failure: ProviderError | None = None,
    *,
    reasoning: str = "",
    owner: str,
    outbox: ev.Outbox | None = None,
) -> None:
    """A turn that did not complete: keep its text, charge what was consumed, release the rest.

    What the provider reported before the failure (Anthropic's input count in message_start, kept on the
    ProviderError) is charged as reported; only the rest is estimated, and the turn says so. Providers bill
    input once a stream starts; with no text and no report they usually did not. Thinking streamed before
    the break was generated (and billed as output) too: it is kept and counted.
    """
    from billing.pricing import credits_for_usage

    used = _consumed(text, reasoning, request, failure)
    credits = credits_for_usage(
        model=model,
        input_tokens=used.input_tokens,
        cached_tokens=used.cached_input_tokens,
        output_tokens=used.output_tokens,
    )
    with transaction.atomic():
        fence(session_id, owner)
        session = WritingSession.objects.select_related("project__owner").get(pk=session_id)
        if status == Turn.TurnStatus.CANCELLED:  # say who stopped it: the owner or Atelier staff
            error = services.requested_stop(session.stop_reason).detail
        updated = Turn.objects.filter(pk=turn_id, status=Turn.TurnStatus.STREAMING).update(
            status=status, output_text=text, reasoning=reasoning, error=error[:2000], finished_at=timezone.now()
        )
        if not updated:
            return
        charged = _charge_consumed(session, turn_id, used, credits)
        finished = {"status": status, "error": error}
        ev.append_event(session_id=session_id, kind="turn_finished", payload=finished, turn_id=turn_id, outbox=outbox)
        transaction.on_commit(
            partial(
                metrics.turn_finished,
                provider=model.provider,
                model=model.model_id,
                status=status,
                usage=used,
                credits=charged,
            )
        )


def _consumed(text: str, reasoning: str, request: ModelRequest, failure: ProviderError | None) -> Usage:
    """What an interrupted turn consumed: as the provider reported it, else estimated (`estimated` says so)."""
    from orchestration.providers.base import Usage, estimate_tokens

    reported = getattr(failure, "usage", None)
    reasoning_tokens = estimate_tokens(reasoning)
    generated = bool(text or reasoning)
    output_tokens = estimate_tokens(text) + reasoning_tokens
    if reported is not None:
        input_tokens, cached_tokens = reported.input_tokens, reported.cached_input_tokens
        estimated = generated
    elif generated:
        input_tokens, cached_tokens = estimate_tokens(request.system) + estimate_tokens(request.user), 0
        estimated = True
    else:
        input_tokens = cached_tokens = 0
        estimated = False
    return Usage(input_tokens, output_tokens, cached_tokens, reasoning_tokens=reasoning_tokens, estimated=estimated)


def _charge_consumed(session: WritingSession, turn_id: int, used: Usage, credits: int) -> int:
    """Settle an interrupted turn's reservation for `credits` and add its usage to the turn and the session."""
    from billing.services import settle_credits

    charged = settle_credits(
        user=session.project.owner,
        reservation_key=turn_reservation_key(turn_id),
        actual=credits,
        key=f"turn:{turn_id}:settle",
        description=f"{session.title}: interrupted turn",
    )
    Turn.objects.filter(pk=turn_id).update(
        credits=charged,
        input_tokens=used.input_tokens,
        cached_tokens=used.cached_input_tokens,
        output_tokens=used.output_tokens,
        usage_estimated=used.estimated,
        reasoning_tokens=used.reasoning_tokens,
    )
    WritingSession.objects.filter(pk=session.pk).update(
        credits_used=F("credits_used") + charged,
        input_tokens=F("input_tokens") + used.input_tokens,
        cached_tokens=F("cached_tokens") + used.cached_input_tokens,
        output_tokens=F("output_tokens") + used.output_tokens,
        reasoning_tokens=F("reasoning_tokens") + used.reasoning_tokens,
    )
    return charged


def fail_turn(*, session_id: int, turn_id: int, text: str | None, owner: str | None = None) -> None:
    """After an unexpected exception: the turn ends FAILED and its reservation is released, whatever broke.

    `text`: what the turn streamed, or None to take it from the turn's chunk events (`manage.py
    reconcile_credits --fix`). `owner`: the lease holder, whose lease fences the write (None: unfenced).
    Each part runs on its own so one broken part (the event log, say) cannot keep the others from running.
    A reservation the settle path already closed stays closed (release is a no-op then). Anything left
    behind is found by `manage.py reconcile_credits`.
    """
    from billing.services import release_credits

    if text is None:
        text = ev.streamed_text([turn_id]).get(turn_id, "")
    try:
        with transaction.atomic():
            if owner is not None:
                fence(session_id, owner)  # a worker that lost its lease leaves the turn to the new owner
            updated = Turn.objects.filter(pk=turn_id, status=Turn.TurnStatus.STREAMING).update(
                status=Turn.TurnStatus.FAILED, output_text=text, error=INTERNAL_ERROR, finished_at=timezone.now()
            )
            session = WritingSession.objects.select_related("project__owner").get(pk=session_id)
            release_credits(
                user=session.project.owner, reservation_key=turn_reservation_key(turn_id), key=f"turn:{turn_id}:release"
            )
    except LeaseLost:
        return
    except Exception:
        logger.exception("could not fail turn %s cleanly", turn_id)
        return
    if updated:
        try:
            ev.append_event(
                session_id=session_id,
                kind="turn_finished",
                payload={"status": Turn.TurnStatus.FAILED, "error": INTERNAL_ERROR},
                turn_id=turn_id,
            )
        except Exception:
            logger.exception("could not record the end of turn %s", turn_id)
