"""One agent call to its end: its attempts, the retries, the window refit and the fallback model.

run_call makes a call's attempts (docs/providers.md, "Errors"): each attempt begins a turn
(orchestration/turns.py), streams the reply into the step's chunk batcher and saves how it ended; a failed
attempt is retried after a delay, refitted at once to the provider's own count of the context window, or
handed to the agent's fallback model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from django.conf import settings

from atelier.core import metrics
from atelier.core.logs import bind as bind_log
from orchestration.db_thread import db, in_db_thread
from orchestration.drive_state import CallOutcome, DriveCache
from orchestration.flows import AgentCall
from orchestration.lease import LeaseLost
from orchestration.models import Agent, LLMModel, Turn, WritingSession
from orchestration.turns import INTERNAL_ERROR, USER_STOP, abandon_turn, begin_turn, complete_turn, fail_turn

if TYPE_CHECKING:
    from orchestration.chunks import ChunkBatcher
    from orchestration.providers import ModelRequest, ProviderError

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
    """
    cache = DriveCache() if cache is None else cache
    if call.agent_id not in cache.agents:
        cache.agents[call.agent_id] = await in_db_thread(_load_agent, call.agent_id)
    agent = cache.agents[call.agent_id]
    if cache.turns is None:
        turns = await in_db_thread(_load_turn_keys, session.pk)
        if cache.turns is None:  # a concurrent call of this step may have loaded (and noted) them first
            cache.turns = turns
    existing, attempts = _earlier_attempts(cache.turns.get((round_number, agent.pk), []), call.slot)
    if existing:  # this step already ran to completion before a crash: nothing to redo
        return CallOutcome("completed", existing)

    if call.model_id is not None:  # the planned flow's router chose it; the flow picks the next one
        models = [await in_db_thread(LLMModel.objects.get, pk=call.model_id)]
    else:
        fallback = agent.fallback_model if agent.fallback_model_id else None
        models = [agent.model] + ([fallback] if fallback is not None else [])
    failures: list[str] = []  # one line per model that gave up, for the final message
    for model in models:
        state = _ModelState()
        while True:
            # Calls of one agent in one round run concurrently in the planned flow: take the next attempt
            # number from the drive's shared counter, so the turn key (session, round, agent, attempt) stays unique.
            attempts = cache.limiter.next_attempt(session.pk, round_number, agent.pk, attempts)
            async with cache.limiter.hold(model.provider):
                prepared = await db(
                    begin_turn,
                    session,
                    agent,
                    model,
                    round_number,
                    attempts,
                    call,
                    state.window,
                    owner=owner,
                    cache=cache,
                )
                if isinstance(prepared, CallOutcome):
                    if prepared.status == "too_large":
                        state.last_error = prepared.error
                        break  # the fallback model may have a larger context window
                    return prepared
                turn_id, request, estimated_tokens = prepared
                cache.note_turn(round_number, agent.pk, (turn_id, Turn.TurnStatus.STREAMING, attempts, call.slot))
                bind_log(turn_id=turn_id)  # this call's own task: its records carry the turn being streamed
                attempt = _Attempt(turn_id=turn_id, request=request, estimated_tokens=estimated_tokens)
                try:
                    decision = await _run_attempt(
                        session, agent, model, call, batcher, attempt, state, owner=owner, cache=cache
                    )
                    if isinstance(decision, CallOutcome) and decision.status == "completed":
                        # One of the DONE statuses (completed, truncated, refused): the call is done either way.
                        cache.note_turn(
                            round_number, agent.pk, (turn_id, Turn.TurnStatus.COMPLETED, attempts, call.slot)
                        )
                except LeaseLost:
                    raise  # another executor owns the session now: stand down without touching anything
                except Exception:
                    # A bug or an unexpected library error: never leave the turn streaming or its credits held.
                    logger.exception("turn %s crashed", turn_id)
                    await batcher.flush()
                    await in_db_thread(
                        fail_turn, session_id=session.pk, turn_id=turn_id, text="".join(attempt.received), owner=owner
                    )
                    return CallOutcome("failed", turn_id, INTERNAL_ERROR)
            if isinstance(decision, CallOutcome):
                return decision
            if decision == "next_model":
                break
            if decision != "refit":  # "retry" after state.delay seconds
                await wait_before_retry(state.delay)
        if state.last_error:
            failures.append(f"{model.display_name}: {state.last_error}")
        elif state.gave_up:
            failures.append(state.gave_up)
    return CallOutcome("failed", None, f"{agent.name} gave up. " + " Then ".join(failures))


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
    session: WritingSession,
    agent: Agent,
    model: LLMModel,
    call: AgentCall,
    batcher: ChunkBatcher,
    attempt: _Attempt,
    state: _ModelState,
    *,
    owner: str,
    cache: DriveCache | None = None,
) -> CallOutcome | RetryDecision:
    """Stream one attempt and save how it ended. Returns a CallOutcome, or what to do next: "retry" (after
    state.delay), "refit" (at once, with state.window) or "next_model". Unexpected exceptions propagate."""
    from orchestration.providers import ProviderError, ReasoningDelta, StreamEnd, TextDelta, get_adapter

    turn_id, request = attempt.turn_id, attempt.request
    started = time.monotonic()
    first_token_at: float | None = None
    try:
        end: StreamEnd | None = None
        async for item in get_adapter(model.provider).stream(request):
            if isinstance(item, TextDelta):
                if first_token_at is None:
                    first_token_at = time.monotonic()
                attempt.received.append(item.text)
                batcher.add(turn_id, item.text)
            elif isinstance(item, ReasoningDelta):
                attempt.thought.append(item.text)
                batcher.add_reasoning(turn_id, item.text)
            elif isinstance(item, StreamEnd):
                end = item
        if end is None:
            raise ProviderError("The reply ended without a proper end.", kind="stream_broken", retryable=True)
        # The turn's last chunks are saved with the turn itself: one transaction, not two.
        unsaved = await batcher.take(turn_id)
        timing = (int((time.monotonic() - started) * 1000), _ms(started, first_token_at))
        text, reasoning = "".join(attempt.received), "".join(attempt.thought)
        await db(
            complete_turn,
            session=session,
            turn_id=turn_id,
            agent=agent,
            model=model,
            text=text,
            end=end,
            timing=timing,
            call=call,
            reasoning=reasoning,
            owner=owner,
            cache=cache,
            unsaved=unsaved,
        )
        return CallOutcome("completed", turn_id)
    except asyncio.CancelledError:
        await batcher.flush()
        text, reasoning = "".join(attempt.received), "".join(attempt.thought)
        await db(
            abandon_turn,
            session.pk,
            turn_id,
            model,
            text,
            request,
            Turn.TurnStatus.CANCELLED,
            USER_STOP,
            reasoning=reasoning,
            owner=owner,
        )
        return CallOutcome("cancelled", turn_id)
    except ProviderError as error:
        await batcher.flush()
        return await _after_provider_error(session, agent, model, attempt, state, error, owner=owner)


async def _after_provider_error(
    session: WritingSession,
    agent: Agent,
    model: LLMModel,
    attempt: _Attempt,
    state: _ModelState,
    error: ProviderError,
    *,
    owner: str,
) -> CallOutcome | RetryDecision:
    """Save the failed attempt (charging what the provider reported) and decide what comes next."""
    metrics.provider_error(provider=model.provider, model=model.model_id, kind=error.kind)
    message = error.user_message
    status = Turn.TurnStatus.INCOMPLETE if attempt.received else Turn.TurnStatus.FAILED
    text, reasoning = "".join(attempt.received), "".join(attempt.thought)
    args = (session.pk, attempt.turn_id, model)
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
        return CallOutcome("failed", attempt.turn_id, f"{agent.name}: {message}")
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


def _load_agent(agent_id: int) -> Agent:
    return Agent.objects.select_related("model", "fallback_model").prefetch_related("criteria").get(pk=agent_id)


def _load_turn_keys(session_id: int) -> dict[tuple[int, int], list[tuple[int, str, int, str]]]:
    """Every agent turn of the session as (round, agent id) -> [(turn id, status, attempt, slot)], one query."""
    keys: dict[tuple[int, int], list[tuple[int, str, int, str]]] = {}
    rows = Turn.objects.filter(session_id=session_id, agent_id__isnull=False)
    for pk, round_number, agent_id, status, attempt, slot in rows.values_list(
        "pk", "round", "agent_id", "status", "attempt", "slot"
    ):
        keys.setdefault((round_number, agent_id), []).append((pk, status, attempt, slot))
    return keys


def _earlier_attempts(rows: list[tuple[int, str, int, str]], slot: str = "") -> tuple[int | None, int]:
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
