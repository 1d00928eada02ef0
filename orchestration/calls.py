"""One agent call to its end: its attempts, the retries, the window refit and the fallback model.

run_call makes a call's attempts (docs/providers.md, "Errors"): each attempt begins a turn
(orchestration/turns.py), streams the reply into the step's chunk batcher and saves how it ended; a failed
attempt is retried after a delay, refitted at once to the provider's own count of the context window, or
handed to the agent's fallback model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal, Protocol

from django.conf import settings

from atelier.core import metrics
from atelier.core.logs import bind as bind_log
from orchestration.db_thread import db, db_push_behind, in_db_thread
from orchestration.drive_state import BegunAttempt, CallOutcome, DeferredCompletion, DriveCache, TurnRow, TurnRows
from orchestration.flows import AgentCall, Step
from orchestration.flows.base import note_team
from orchestration.lease import LeaseLost
from orchestration.models import Agent, LLMModel, Turn, WritingSession
from orchestration.turns import INTERNAL_ERROR, USER_STOP, abandon_turn, begin_turn, complete_turn, fail_turn

if TYPE_CHECKING:
    from orchestration import events as ev
    from orchestration.chunks import ChunkBatcher
    from orchestration.providers import ModelRequest, ProviderError, StreamEnd, ToolCall

logger = logging.getLogger(__name__)

# What a failed attempt leads to: again after a delay, at once in a smaller window, or the fallback model.
RetryDecision = Literal["retry", "refit", "next_model"]

wait_before_retry = asyncio.sleep  # the retry waits (tests record them instead of waiting)


async def run_call(
    session: WritingSession,
    call: AgentCall,
    round_number: int,
    batcher: ChunkBatcher,
    cache: DriveCache | None = None,
    *,
    owner: str,
) -> CallOutcome:
    """One agent call to its end: attempts, retries (docs/providers.md, "Errors"), then the fallback model.

    A call with `model_id` (the planned flow's router) uses that catalogue model only; the flow picks the
    next one. Each attempt waits for a slot of the drive's CallLimiter (global and per provider).
    Raises LeaseLost if another executor took the session over.
    """
    cache = DriveCache() if cache is None else cache
    if call.agent_id not in cache.agents:
        cache.agents[call.agent_id] = await in_db_thread(_load_agent, call.agent_id)
    agent = cache.agents[call.agent_id]
    if cache.turns is None:
        turns = await in_db_thread(load_turn_keys, session.pk)
        if cache.turns is None:  # a concurrent call of this step may have loaded (and noted) them first
            cache.turns = turns
    existing, attempts = _earlier_attempts(cache.turns.get((round_number, agent.pk), []), call.slot)
    if existing:  # this step already ran to completion before a crash: nothing to redo
        return CallOutcome("completed", existing)
    running = _Call(session, agent, call, round_number, batcher, cache, owner, attempts)
    failures: list[str] = []  # one line per model that gave up, for the final message
    for model in await _models_for(call, agent):
        outcome = await _on_model(running, model)
        if isinstance(outcome, CallOutcome):
            return outcome
        if outcome:
            failures.append(outcome)
    return CallOutcome("failed", None, f"{agent.name} gave up. " + " Then ".join(failures))


@dataclass
class _Call:
    """One agent call being made: what every attempt of it needs."""

    session: WritingSession
    agent: Agent
    call: AgentCall
    round_number: int
    batcher: ChunkBatcher
    cache: DriveCache
    owner: str
    attempts: int  # the agent's attempts this round so far (the last attempt number handed out)


async def _models_for(call: AgentCall, agent: Agent) -> list[LLMModel]:
    """The models to try in order: the router's choice alone, else the agent's model then its fallback."""
    if call.model_id is not None:  # the planned flow's router chose it; the flow picks the next one
        return [await in_db_thread(LLMModel.objects.get, pk=call.model_id)]
    fallback = agent.fallback_model if agent.fallback_model_id else None
    return [agent.model] + ([fallback] if fallback is not None else [])


async def _on_model(running: _Call, model: LLMModel) -> CallOutcome | str:
    """Attempts on one model until the call ends (a CallOutcome) or the model is given up on (why, or "")."""
    state = _ModelState()
    while True:
        decision = await _attempt_on(running, model, state, _next_attempt(running, model))
        if isinstance(decision, CallOutcome):
            return decision
        if decision == "next_model":
            break
        if decision != "refit":  # "retry" after state.delay seconds
            await wait_before_retry(state.delay)
    if state.last_error:
        return f"{model.display_name}: {state.last_error}"
    return state.gave_up


def _next_attempt(running: _Call, model: LLMModel) -> tuple[int, ModelRequest, int] | CallOutcome | None:
    """Number the call's next attempt on `model` (running.attempts); what turns.begin_turn returned for it if the
    step's planning began it already (begin_lone_call), else None. Raises what begin_turn raised there."""
    begun = running.cache.take_begun(running.call, model)
    if begun is not None:
        if begun.error is not None:
            raise begun.error
        running.attempts = begun.number
        return begun.prepared
    # Calls of one agent in one round run concurrently in the planned flow: take the next attempt
    # number from the drive's shared counter, so the turn key (session, round, agent, attempt) stays unique.
    running.attempts = running.cache.limiter.next_attempt(
        running.session.pk, running.round_number, running.agent.pk, running.attempts
    )
    return None


async def _attempt_on(
    running: _Call, model: LLMModel, state: _ModelState, prepared: tuple[int, ModelRequest, int] | CallOutcome | None
) -> CallOutcome | RetryDecision:
    """One attempt, holding its limiter slots from creating its turn to saving it; what comes next.

    `prepared`: what turns.begin_turn returned for this attempt if it was begun already (begin_lone_call)."""
    session, agent, call, cache, owner = running.session, running.agent, running.call, running.cache, running.owner
    number = running.attempts
    async with cache.limiter.hold(model.provider):
        if prepared is None:
            prepared = await db_push_behind(
                begin_turn,
                session,
                agent,
                model,
                running.round_number,
                number,
                call,
                state.window,
                owner=owner,
                cache=cache,
            )
        if isinstance(prepared, CallOutcome):
            if prepared.status == "too_large":
                state.last_error = prepared.error
                return "next_model"  # the fallback model may have a larger context window
            return prepared
        turn_id, request, estimated_tokens = prepared
        cache.note_turn(running.round_number, agent.pk, TurnRow(turn_id, Turn.TurnStatus.STREAMING, number, call.slot))
        bind_log(turn_id=turn_id)  # this call's own task: its records carry the turn being streamed
        attempt = _Attempt(turn_id=turn_id, request=request, estimated_tokens=estimated_tokens)
        try:
            decision = await _run_attempt(running, model, attempt, state)
            if isinstance(decision, CallOutcome) and decision.status == "completed":
                # One of the DONE statuses (completed, truncated, refused): the call is done either way.
                done = TurnRow(turn_id, Turn.TurnStatus.COMPLETED, number, call.slot)
                cache.note_turn(running.round_number, agent.pk, done)
        except LeaseLost:
            raise  # another executor owns the session now: stand down without touching anything
        except Exception:
            # A bug or an unexpected library error: never leave the turn streaming or its credits held.
            logger.exception("turn %s crashed", turn_id)
            await running.batcher.flush()
            text = "".join(attempt.received)
            await in_db_thread(fail_turn, session_id=session.pk, turn_id=turn_id, text=text, owner=owner)
            return CallOutcome("failed", turn_id, INTERNAL_ERROR)
    return decision


@dataclass
class _ModelState:
    """Where the attempts on one model stand."""

    retries: int = 0
    waited: float = 0.0  # seconds spent waiting on this model's rate limit
    window: int | None = None  # our-units context window from the provider's own count, after a 400
    delay: float = 0.0  # the wait before the next attempt
    last_error: str = ""  # why the model could not be used at all (prompt too long)
    gave_up: str = ""  # what happened, once retries are spent


@dataclass
class _Attempt:
    turn_id: int
    request: ModelRequest
    estimated_tokens: int
    received: list[str] = field(default_factory=list)
    thought: list[str] = field(default_factory=list)  # the turn's reasoning, kept apart from its text


async def _run_attempt(
    running: _Call, model: LLMModel, attempt: _Attempt, state: _ModelState
) -> CallOutcome | RetryDecision:
    """Stream one attempt and save how it ended. Returns a CallOutcome, or what to do next: "retry" (after
    state.delay), "refit" (at once, with state.window) or "next_model". Unexpected exceptions propagate."""
    from orchestration.providers import ProviderError

    turn_id, batcher = attempt.turn_id, running.batcher
    try:
        end, timing = await _stream(model, attempt, batcher)
        # The turn's last chunks are saved with the turn itself: one transaction, not two.
        unsaved = await batcher.take(turn_id)
        text = "".join(attempt.received)
        completion = partial(
            complete_turn,
            session=running.session,
            turn_id=turn_id,
            agent=running.agent,
            model=model,
            text=text,
            end=end,
            timing=timing,
            call=running.call,
            reasoning="".join(attempt.thought),
            owner=running.owner,
            cache=running.cache,
            unsaved=unsaved,
        )
        if running.cache.defer_completion:
            # A one-call step: the phase after the step saves it with the next turn's start (engine._between_steps).
            running.cache.deferred = DeferredCompletion(turn_id, text, completion)
        elif await db_push_behind(completion) is None:
            # Not claimed: the turn ended elsewhere meanwhile. The drive reads the turns afresh rather than note it
            # as completed (the flow would take it as done and plan the same call again and again).
            running.cache.turns = None
        return CallOutcome("completed", turn_id)
    except asyncio.CancelledError:
        await batcher.flush()
        text, reasoning = "".join(attempt.received), "".join(attempt.thought)
        cancelled = Turn.TurnStatus.CANCELLED
        args = (running.session.pk, turn_id, model, text, attempt.request, cancelled, USER_STOP)
        await db(abandon_turn, *args, reasoning=reasoning, owner=running.owner)
        return CallOutcome("cancelled", turn_id)
    except ProviderError as error:
        await batcher.flush()
        return await _after_provider_error(running, model, attempt, state, error)


class StreamingAttempt(Protocol):
    """What `read_stream` fills: an attempt's turn, the request sent, and the text and thinking received."""

    turn_id: int
    request: ModelRequest
    received: list[str]
    thought: list[str]


async def read_stream(
    model: LLMModel,
    attempt: StreamingAttempt,
    batcher: ChunkBatcher,
    first: list[float],
    tool_calls: list[ToolCall] | None = None,
) -> StreamEnd:
    """Read the provider's stream for `attempt.request` into `attempt` (text and thinking also to `batcher`)
    and return its end. The monotonic time of the first text is appended to `first`, so a caller that cancels
    the read still knows it; tool calls go to `tool_calls` when given, else are ignored. The stream is closed
    when the read ends, also on cancellation. Raises ProviderError, also when the stream stops without its end
    (retryable)."""
    from orchestration.providers import ProviderError, ReasoningDelta, StreamEnd, TextDelta, ToolCall, get_adapter

    end: StreamEnd | None = None
    async with contextlib.aclosing(get_adapter(model.provider).stream(attempt.request)) as items:
        async for item in items:
            if isinstance(item, TextDelta):
                if not first:
                    first.append(time.monotonic())
                attempt.received.append(item.text)
                batcher.add(attempt.turn_id, item.text)
            elif isinstance(item, ReasoningDelta):
                attempt.thought.append(item.text)
                batcher.add_reasoning(attempt.turn_id, item.text)
            elif isinstance(item, ToolCall):
                if tool_calls is not None:
                    tool_calls.append(item)
            elif isinstance(item, StreamEnd):
                end = item
    if end is None:
        raise ProviderError("The reply ended without a proper end.", kind="stream_broken", retryable=True)
    return end


async def _stream(
    model: LLMModel, attempt: _Attempt, batcher: ChunkBatcher
) -> tuple[StreamEnd, tuple[int, int | None]]:
    """Stream the attempt's reply into `attempt` and the batcher: (its end, (latency, time to first token) in ms).

    Raises ProviderError, also when the stream stops without its end."""
    started = time.monotonic()
    first: list[float] = []
    end = await read_stream(model, attempt, batcher, first)
    return end, (int((time.monotonic() - started) * 1000), _ms(started, first[0] if first else None))


async def _after_provider_error(
    running: _Call, model: LLMModel, attempt: _Attempt, state: _ModelState, error: ProviderError
) -> CallOutcome | RetryDecision:
    """Save the failed attempt (charging what the provider reported) and decide what comes next."""
    owner = running.owner
    metrics.provider_error(provider=model.provider, model=model.model_id, kind=error.kind)
    message = error.user_message
    status = Turn.TurnStatus.INCOMPLETE if attempt.received else Turn.TurnStatus.FAILED
    text, reasoning = "".join(attempt.received), "".join(attempt.thought)
    args = (running.session.pk, attempt.turn_id, model)
    if error.kind == "context_length":
        # Re-fit once with the provider's own numbers; still too long: the fallback model, if any.
        refit = state.window is None
        note = " Atelier fits the prompt to the provider's own count and tries once more." if refit else ""
        await db(abandon_turn, *args, "", attempt.request, status, message + note, error, owner=owner)
        state.window = _refit_window(model, attempt.estimated_tokens, error) if refit else None
        state.last_error = "" if refit else message
        return "refit" if refit else "next_model"
    plan = retry_plan(error, state.retries, state.waited, settings.PROVIDER_MAX_RETRIES)
    turn_error = message + (f" Retrying in {plan:.1f} s." if plan is not None else "")
    await db(abandon_turn, *args, text, attempt.request, status, turn_error, error, reasoning=reasoning, owner=owner)
    if not error.retryable:
        return CallOutcome("failed", attempt.turn_id, f"{running.agent.name}: {message}")
    if plan is None:
        retries = state.retries
        what = f"{retries + 1} attempt{'s' if retries else ''} ({retries} retr{'y' if retries == 1 else 'ies'}"
        what += f" over {state.waited:.0f} s of waiting)" if error.kind == "rate_limit" else ")"
        state.gave_up = f"{model.display_name} failed {what}; the last answer was: {message}"
        return "next_model"
    state.retries += 1
    state.waited += plan
    state.delay = plan
    logger.info("retrying %s after %s (%.1fs)", model.model_id, error.kind, plan)
    return "retry"


def retry_plan(error: ProviderError, retries: int, waited: float, max_retries: int) -> float | None:
    """Seconds to wait before the next attempt on this model, or None to give up on it.

    Rate limits are retried for a window of waiting (settings.PROVIDER_RATE_LIMIT_WINDOW_SECONDS, about a
    minute), honouring Retry-After; other retryable errors up to PROVIDER_MAX_RETRIES times.
    """
    from orchestration.providers.retry import retry_delay

    if not error.retryable:
        return None
    delay = retry_delay(retries, error.retry_after)
    if error.kind == "rate_limit":
        if waited + delay > settings.PROVIDER_RATE_LIMIT_WINDOW_SECONDS:
            return None
        return delay
    return delay if retries < max_retries else None


def _refit_window(model: LLMModel, estimated_tokens: int, error: ProviderError) -> int:
    """The context window to fit the next prompt to, in our estimate's units, from the provider's own numbers.

    Our estimate and the provider's tokenizer differ; the 400 says how many tokens the prompt really was and
    how large the window is, so scale the window by (our estimate / their count) and keep 5 % spare.
    """
    real_window = error.limit_tokens or model.context_window
    # Without the provider's count, assume we under-estimated by a tenth.
    scale = estimated_tokens / error.prompt_tokens if error.prompt_tokens and estimated_tokens else 0.9
    return max(1, int(min(real_window, model.context_window) * scale * 0.95))


def _ms(start: float, end: float | None) -> int | None:
    return None if end is None else int((end - start) * 1000)


def load_team(session: WritingSession, cache: DriveCache) -> None:
    """Read the session's whole team once per drive, before its first step is planned: every agent with its
    models and rubric into `cache.agents`, their order, activity and roles noted on the drive's session object
    for the flows (flows.base.note_team). Two statements (the agents with their models, the criteria) where a
    sequential drive of n agents sent 2n + 1 (the team's order, then each agent and its rubric), and one of
    them before the first turn: every statement of a drive's first step is a wait in the queue pickup (issue 15)."""
    if cache.team_loaded:
        return
    agents = list(
        session.agents.select_related("model", "fallback_model").prefetch_related("criteria").order_by("order", "pk")
    )
    cache.agents.update({agent.pk: agent for agent in agents})
    note_team(session, agents)
    cache.team_loaded = True


def begin_lone_call(
    session: WritingSession, step: Step, cache: DriveCache, *, owner: str, outbox: ev.Outbox | None = None
) -> None:
    """Begin a one-call step's first attempt (turns.begin_turn) in the database phase that planned the step
    (engine._prepare_step), where the call would begin it in a phase of its own; the call takes it over
    (DriveCache.take_begun). One thread hop fewer per turn, and a new run's first turn starts in the drive's
    first phase: under the session host each hop waits for the shared event loop and the database queue, and
    the queue pickup is the sum of the first step's hops (issue 15). The drive's call limiter has its slots
    free, the call being the step's only one. Nothing is begun for a call that already completed (a re-run
    after a crash), that runs on a model the planned flow's router chose, or whose agent is not in the drive's
    team. Raises LeaseLost; begin_turn's outcomes (too large, out of credits, held) and any other exception it
    raises are kept for the call, which acts on them as if it had begun the turn itself.
    """
    if len(step.calls) != 1 or cache.turns is None:
        return
    call = step.calls[0]
    agent = cache.agents.get(call.agent_id)
    if call.model_id is not None or agent is None:
        return
    existing, attempts = _earlier_attempts(cache.turns.get((step.round, agent.pk), []), call.slot)
    if existing:
        return
    number = cache.limiter.next_attempt(session.pk, step.round, agent.pk, attempts)
    model = agent.model
    try:
        prepared = begin_turn(session, agent, model, step.round, number, call, owner=owner, cache=cache, outbox=outbox)
    except LeaseLost:
        raise
    except Exception as error:  # noqa: BLE001 - a bug: the call raises it, as when it begins the turn (engine._tally)
        cache.begun = BegunAttempt(call, model, number, None, error)
        return
    cache.begun = BegunAttempt(call, model, number, prepared)


async def drop_unclaimed_attempt(session_id: int, cache: DriveCache, *, owner: str) -> None:
    """End an attempt begun ahead of its call (begin_lone_call) that the call never took over (it was cancelled
    before it started): the turn ends cancelled and its reservation is released (nothing was sent, so nothing
    is charged). Raises LeaseLost."""
    begun, cache.begun = cache.begun, None
    if begun is None or not isinstance(begun.prepared, tuple):
        return  # nothing was written
    turn_id, request, _ = begun.prepared
    cancelled = Turn.TurnStatus.CANCELLED
    await db(abandon_turn, session_id, turn_id, begun.model, "", request, cancelled, USER_STOP, owner=owner)


def _load_agent(agent_id: int) -> Agent:
    return Agent.objects.select_related("model", "fallback_model").prefetch_related("criteria").get(pk=agent_id)


def load_turn_keys(session_id: int) -> TurnRows:
    """Every agent turn of the session as (round, agent id) -> [(turn id, status, attempt, slot)], one query."""
    keys: TurnRows = {}
    rows = Turn.objects.filter(session_id=session_id, agent_id__isnull=False)
    for pk, round_number, agent_id, status, attempt, slot in rows.values_list(
        "pk", "round", "agent_id", "status", "attempt", "slot"
    ):
        keys.setdefault((round_number, agent_id), []).append(TurnRow(pk, status, attempt, slot))
    return keys


def _earlier_attempts(rows: list[TurnRow], slot: str = "") -> tuple[int | None, int]:
    """(id of a completed turn for this call's slot, number of the agent's attempts this round).

    `rows`: the agent's turns this round, (turn id, status, attempt, slot). Attempts count across the
    agent's slots in the round (a roundtable moderator drafts, then moderates), so the turn key
    (session, round, agent, attempt) stays unique.
    """
    completed = next(
        (pk for pk, status, _, turn_slot in rows if status in Turn.DONE_STATUSES and turn_slot in (slot, "")),
        None,
    )
    return completed, max((attempt for _, _, attempt, _ in rows), default=0)
