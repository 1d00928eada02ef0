"""The one engine that executes steps for every flow.

drive(session_id) claims the session's lease, then loops: ask the flow policy for the next
step, run its agent calls concurrently (async SDK clients), stream chunks out in small batches,
save each finished turn under its unique key, parse its evaluation, settle its credits and
check termination. Every step is idempotent: a turn is saved and charged in one transaction,
guarded by its status, so a step re-run after a crash never saves or charges twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from atelier.core import metrics
from atelier.core.logs import bind as bind_log
from atelier.core.logs import bound
from orchestration import events as ev
from orchestration import services
from orchestration.chunks import ChunkBatcher
from orchestration.flows import AgentCall, Finished, Step, Waiting, get_policy
from orchestration.lease import (
    RENEW_INTERVAL,
    LeaseLost,
    claim_lease,
    fence,
    fenced_update,
    new_owner_id,
    release_lease,
    renew_lease,
)
from orchestration.models import (
    ALLOWED_TRANSITIONS,
    Agent,
    DocumentVersion,
    LLMModel,
    Status,
    StopReason,
    Turn,
    WritingSession,
    turn_reservation_key,
)
from orchestration.termination import Stop, check_after_turn, check_before_step, conditions_for
from orchestration.versions import record_version

if TYPE_CHECKING:
    from orchestration.providers import ModelRequest, ProviderError, StreamEnd

logger = logging.getLogger(__name__)

# One task drives a session for at most this long, then hands over to a fresh task, so a
# long run never approaches django-q2's task timeout.
DRIVE_BUDGET_SECONDS = 240
MONITOR_INTERVAL = RENEW_INTERVAL  # how often we renew the lease and look for Stop
OUT_OF_CREDITS_DETAIL = (
    "Out of credits. It carries on by itself within a minute of credits arriving "
    "(upgrade, or wait for your monthly credits)."
)
USER_STOP = "Stopped by you."
# What an interrupted attempt says when the executor running it disappeared (crashed, killed,
# frozen or cut off): the next executor cannot tell these apart, so it says what it knows.
WORKER_LOST = (
    "The worker running this turn stopped responding (crashed, killed or frozen); another worker ran it again."
)

# The engine's outcomes, named (a misspelt one is a type error):
# what drive() reports for a run (docstring of drive),
DriveOutcome = Literal["busy", "idle", "paused", "stopped", "finished", "failed", "requeued", "lease_lost"]
# what the run does after a step,
StepOutcome = Literal["continue", "paused", "failed", "stopped", "finished"]
# how one agent call ended (CallOutcome.status),
CallStatus = Literal["completed", "cancelled", "out_of_credits", "failed", "too_large"]
# and what a failed attempt leads to: again after a delay, at once in a smaller window, or the fallback model.
RetryDecision = Literal["retry", "refit", "next_model"]

T = TypeVar("T")

_sleep = asyncio.sleep  # the retry waits (tests record them instead of waiting)


_db_executor: tuple[int, ThreadPoolExecutor] | None = None  # (pid, the engine's database thread)


def _db_thread() -> ThreadPoolExecutor:
    """The process's one engine database thread (created lazily, and afresh in a forked child).

    One thread, as asgiref's thread-sensitive executor gives, so a drive's statements share one connection
    (and SQLite never sees two writers from one engine); a plain executor hop costs about half of what
    asgiref's SyncToAsync does (issue 15: four to five hops per call).
    """
    global _db_executor
    if _db_executor is None or _db_executor[0] != os.getpid():
        _db_executor = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-db"))
    return _db_executor[1]


async def in_db_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn(*args, **kwargs) in the engine's database thread (with this task's context: log bindings)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_db_thread(), partial(context.run, fn, *args, **kwargs))


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database phase in the engine's database thread, then push the events it committed from this loop.

    The events one phase committed for a session go out in one push (one group_send: two Redis round trips
    with no viewer, four with one), in their order.
    """

    def run() -> tuple[T, list[tuple[int, dict[str, Any]]]]:
        with ev.collect_broadcasts() as messages:
            result = fn(*args, **kwargs)
        return result, list(messages)

    result, messages = await in_db_thread(run)
    for session_id, message in ev.coalesce_messages(messages):
        await ev.push_message(session_id, message)
    return result


# --- Driving ---------------------------------------------------------------------------------


def drive(session_id: int, *, budget_seconds: float = DRIVE_BUDGET_SECONDS) -> DriveOutcome:
    """Run the session until it pauses, stops, finishes or the time budget is used. Returns the outcome.

    Outcomes: busy (another executor holds it), idle, paused, stopped, finished, failed, requeued,
    lease_lost (another executor took over while this one was frozen or slow: it wrote nothing more).
    """
    owner = new_owner_id()
    if not claim_lease(session_id, owner):
        return "busy"
    try:
        with bound(session_id=session_id):  # every record of this drive (asyncio.run copies the context)
            return asyncio.run(_drive(session_id, owner, budget_seconds))
    except LeaseLost:
        logger.warning("session %s: lease lost to another executor; standing down", session_id)
        return "lease_lost"
    finally:
        release_lease(session_id, owner)


class CallLimiter:
    """How many calls of one session stream at once: overall and per provider (asyncio semaphores).

    The limits are the smaller of the engine's settings (ENGINE_MAX_PARALLEL_CALLS,
    ENGINE_MAX_CALLS_PER_PROVIDER) and the owner's plan (billing/plans.py max_parallel_calls,
    max_calls_per_provider). A call holds its slots from creating its turn to saving it, so a queued call
    neither shows as streaming nor reserves credits. It also hands out attempt numbers to calls of one
    agent running concurrently in one round (the planned flow's parallel tasks), so their turn keys differ.
    """

    def __init__(self, parallel: int | None = None, per_provider: int | None = None) -> None:
        self.parallel = parallel or settings.ENGINE_MAX_PARALLEL_CALLS
        self.per_provider = per_provider or settings.ENGINE_MAX_CALLS_PER_PROVIDER
        self._global = asyncio.Semaphore(self.parallel)
        self._providers: dict[str, asyncio.Semaphore] = {}
        self._attempts: dict[tuple[int, int, int], int] = {}

    @classmethod
    def for_session(cls, session_id: int) -> CallLimiter:
        """The limiter for this session's owner's plan (one query for the account)."""
        from billing.services import effective_plan, get_account

        owner = WritingSession.objects.select_related("project__owner").get(pk=session_id).project.owner
        plan = effective_plan(get_account(owner))
        return cls(
            min(plan.max_parallel_calls, settings.ENGINE_MAX_PARALLEL_CALLS),
            min(plan.max_calls_per_provider, settings.ENGINE_MAX_CALLS_PER_PROVIDER),
        )

    @contextlib.asynccontextmanager
    async def hold(self, provider: str):
        semaphore = self._providers.setdefault(provider, asyncio.Semaphore(self.per_provider))
        async with self._global, semaphore:
            yield

    def next_attempt(self, session_id: int, round_number: int, agent_id: int, floor: int) -> int:
        """The next attempt number of this agent in this round: above `floor` (what the caller knows was used)
        and above every number this limiter already handed out."""
        key = (session_id, round_number, agent_id)
        number = max(self._attempts.get(key, 0), floor) + 1
        self._attempts[key] = number
        return number


@dataclass
class DriveCache:
    """What one drive reads once and then keeps up to date itself (issue 15: no re-reads per call).

    Valid only while this executor holds the lease: the team, the references, the brief and the document
    cannot change while a session is active (services refuse it), and every turn is created and finished
    by the lease holder, so the drive knows each change it makes. A new drive starts a new cache.
    """

    agents: dict[int, Agent] = field(default_factory=dict)
    references: list[tuple[str, str]] | None = None
    # (round, agent id) -> [(turn id, status, attempt, slot)] of every turn of the session
    turns: dict[tuple[int, int], list[tuple[int, str, int, str]]] | None = None
    # agent id -> (turn id, agent name, feedback) of its latest completed turn with feedback
    feedback: dict[int, tuple[int, str, str]] | None = None
    last_version: int | None = None  # number of the session's latest version (0: none)
    reserved: dict[int, int] = field(default_factory=dict)  # turn id -> credits its reservation holds
    recovered: bool = False  # interrupted turns of earlier executors dealt with
    # The session's call limits (global, per provider) and the attempt numbers handed out (CallLimiter).
    limiter: CallLimiter = field(default_factory=lambda: CallLimiter())

    def note_turn(self, round_number: int, agent_id: int, turn: tuple[int, str, int, str]) -> None:
        """Record a turn this drive created or finished (replacing its earlier entry)."""
        if self.turns is None:
            return
        rows = [row for row in self.turns.get((round_number, agent_id), []) if row[0] != turn[0]]
        self.turns[(round_number, agent_id)] = [*rows, turn]


async def _drive(session_id: int, owner: str, budget_seconds: float) -> DriveOutcome:
    deadline = time.monotonic() + budget_seconds
    cache = DriveCache(limiter=await db(CallLimiter.for_session, session_id))
    outcome: DriveOutcome | tuple[WritingSession, Step] = await db(_prepare_step, session_id, owner, None, cache)
    while True:
        if isinstance(outcome, str):
            return outcome
        session, step = outcome
        result = await run_step(session, step, owner, cache)
        if result.lease_lost:
            raise LeaseLost(f"session {session_id}: lease lost during a step")
        outcome = await db(_between_steps, session_id, owner, step, result, cache, deadline)


def _between_steps(
    session_id: int, owner: str, step: Step, result: StepResult, cache: DriveCache, deadline: float
) -> DriveOutcome | tuple[WritingSession, Step]:
    """After a step, and before the next: one session load serves both (one thread hop, no gap for a Stop)."""
    outcome, planned, session = _after_step(session_id, owner, step, result)
    if outcome != "continue":
        return outcome
    if time.monotonic() > deadline:
        _requeue(session_id, owner)
        return "requeued"
    return _prepare_step(session_id, owner, planned, cache, session=session)


def _requeue(session_id: int, owner: str) -> None:
    if release_lease(session_id, owner):
        services.enqueue_run(session_id)


def _load(session_id: int) -> WritingSession:
    return WritingSession.objects.select_related("project__owner").get(pk=session_id)


def _prepare_step(
    session_id: int,
    owner: str,
    planned: Step | None = None,
    cache: DriveCache | None = None,
    *,
    session: WritingSession | None = None,
) -> DriveOutcome | tuple[WritingSession, Step]:
    """Handle pending status changes, recover interrupted turns, and plan the next step.

    `session`: the row as just loaded by the caller in this same call (else it is loaded here).
    Every write is fenced by the lease (raises LeaseLost if another executor took over).
    """
    session = session if session is not None else _load(session_id)
    if session.status == Status.STOPPING:
        _finish(session, Status.STOPPED, services.requested_stop(session.stop_reason), owner=owner)
        return "stopped"
    if session.status == Status.PAUSING:
        _pause(session, services.requested_stop(session.stop_reason), owner=owner)
        return "paused"
    if session.status not in (Status.QUEUED, Status.RUNNING):
        return "idle"
    if cache is None or not cache.recovered:  # only an earlier executor can have left a turn streaming
        _recover_interrupted_turns(session, owner=owner)
        if cache is not None:
            cache.recovered = True
    if session.status == Status.QUEUED:
        with transaction.atomic():
            fence(session.pk, owner)
            if not services.set_status(session, Status.RUNNING):
                return "idle"
            services.emit_status(session)
    stop = check_before_step(session)
    if stop:
        _finish(session, Status.COMPLETED, stop, owner=owner)
        return "finished"
    # The previous step already asked the policy what comes next; the state has not changed since.
    decision = planned if planned is not None else get_policy(session.flow).next_step(session)
    if isinstance(decision, Waiting):  # the next move is the user's (approve the plan)
        _pause(session, Stop(decision.reason, decision.detail), owner=owner)
        return "paused"
    if isinstance(decision, Finished):
        status = Status.FAILED if decision.reason == StopReason.ERROR else Status.COMPLETED
        _finish(session, status, Stop(decision.reason, decision.detail), owner=owner)
        return "finished"
    if session.current_round != decision.round:
        with transaction.atomic():
            # One statement renews the lease, moves the round and reserves the status event's number.
            row = fenced_update(session.pk, owner, seqs=1, set_fields={"current_round": decision.round})
            session.current_round = decision.round
            session.status = row["status"]
            ev.insert_events(
                session_id=session.pk,
                first_seq=row["last_seq"],
                events=[ev.NewEvent("status", services.status_payload(session))],
            )
    return session, decision


def _after_step(
    session_id: int, owner: str, step: Step, result: StepResult
) -> tuple[StepOutcome, Step | None, WritingSession]:
    """Decide what the finished step leads to: (outcome, the next step if already planned, the session)."""
    session = _load(session_id)
    if result.out_of_credits:
        _pause(session, Stop(StopReason.OUT_OF_CREDITS, OUT_OF_CREDITS_DETAIL), owner=owner)
        return "paused", None, session
    if result.fatal_error:
        _finish(session, Status.FAILED, Stop(StopReason.ERROR, result.fatal_error), owner=owner)
        return "failed", None, session
    if session.status == Status.STOPPING or result.cancelled:
        _finish(session, Status.STOPPED, services.requested_stop(session.stop_reason), owner=owner)
        return "stopped", None, session
    if not result.completed_turn_ids:
        return "continue", None, session
    next_decision = get_policy(session.flow).next_step(session)
    round_complete = not isinstance(next_decision, Step) or next_decision.round > step.round
    if conditions_for(session):  # no stop condition set: nothing to read the turns for
        for turn in Turn.objects.filter(pk__in=result.completed_turn_ids).order_by("pk"):
            stop = check_after_turn(session, turn, round_complete)
            if stop:
                _finish(session, Status.COMPLETED, stop, owner=owner)
                return "finished", None, session
    if session.status == Status.PAUSING:
        _pause(session, services.requested_stop(session.stop_reason), owner=owner)
        return "paused", None, session
    return "continue", next_decision if isinstance(next_decision, Step) else None, session


def _finish(session: WritingSession, status: str, stop: Stop, *, owner: str) -> None:
    """End the run (completed / stopped / failed) unless something already ended it.

    A Stop pressed while the step was finishing wins (STOPPING -> COMPLETED is not a transition):
    the run ends as stopped by the user, as _pause does. A run that already ended stays as it is.
    Raises LeaseLost if another executor holds the session.
    """
    with transaction.atomic():
        fence(session.pk, owner)
        session = WritingSession.objects.select_for_update().get(pk=session.pk)
        if session.status == status:
            return
        if status not in ALLOWED_TRANSITIONS.get(session.status, set()):
            if session.status != Status.STOPPING:
                logger.info("session %s is already %s; not marking it %s", session.pk, session.status, status)
                return
            status, stop = Status.STOPPED, services.requested_stop(session.stop_reason)
        services.set_status(
            session,
            status,
            stop_reason=stop.reason,
            stop_detail=stop.detail,
            finished_at=timezone.now(),
            final_document=session.document,
        )
        services.emit_status(session)
        final_events = getattr(get_policy(session.flow), "final_events", None)
        for kind, payload in final_events(session) if final_events else []:
            ev.append_event(session_id=session.pk, kind=kind, payload=payload)
        transaction.on_commit(lambda: _notify_finished(session.pk))


def _pause(session: WritingSession, stop: Stop, *, owner: str) -> None:
    with transaction.atomic():
        fence(session.pk, owner)
        session = WritingSession.objects.select_for_update().get(pk=session.pk)
        if session.status == Status.STOPPING:
            stop = services.requested_stop(session.stop_reason)
            services.set_status(
                session,
                Status.STOPPED,
                stop_reason=stop.reason,
                stop_detail=stop.detail,
                finished_at=timezone.now(),
                final_document=session.document,
            )
        else:
            services.set_status(session, Status.PAUSED, stop_reason=stop.reason, stop_detail=stop.detail)
        services.emit_status(session)


def _notify_finished(session_id: int) -> None:
    from orchestration.notifications import notify_run_finished

    try:
        notify_run_finished(session_id)
    except Exception:
        logger.exception("could not send the run-finished email for session %s", session_id)


def _recover_interrupted_turns(session: WritingSession, *, owner: str) -> None:
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
                )


# --- Running a step ------------------------------------------------------------------------------


@dataclass
class StepResult:
    completed_turn_ids: list[int] = field(default_factory=list)
    cancelled: bool = False
    lease_lost: bool = False
    out_of_credits: bool = False
    fatal_error: str = ""


async def run_step(session: WritingSession, step: Step, owner: str, cache: DriveCache | None = None) -> StepResult:
    """Run the step's calls concurrently, stream their chunks, watch the lease and Stop; say how it went."""
    cache = DriveCache() if cache is None else cache
    result = StepResult()
    batcher = ChunkBatcher(session.pk, owner)
    done = asyncio.Event()
    flusher = asyncio.create_task(batcher.run(done))
    calls = [
        asyncio.create_task(run_call(session, call, step.round, batcher, cache, owner=owner)) for call in step.calls
    ]

    async def monitor() -> None:
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), timeout=MONITOR_INTERVAL)
                return
            except TimeoutError:
                pass
            seen = batcher.status_seen
            status: str | None
            if seen is not None and time.monotonic() - seen[0] < MONITOR_INTERVAL:
                status = seen[1]  # a chunk save just renewed the lease and read the status: no statement
            else:
                status = await in_db_thread(renew_lease, session.pk, owner)
            if status is None or batcher.lease_lost:
                # Another executor owns the session now: stop streaming, write nothing more.
                result.lease_lost = True
            elif status != Status.STOPPING:
                continue
            result.cancelled = True
            for task in calls:
                task.cancel()
            return

    watcher = asyncio.create_task(monitor())
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    done.set()
    batcher.wake.set()
    await watcher
    await flusher
    await batcher.flush()
    result.lease_lost = result.lease_lost or batcher.lease_lost
    failed: list[tuple[AgentCall, CallOutcome]] = []
    for call, outcome in zip(step.calls, outcomes, strict=True):
        if isinstance(outcome, CallOutcome) and outcome.status == "failed" and step.quorum is not None:
            failed.append((call, outcome))
            continue
        if isinstance(outcome, LeaseLost):
            result.lease_lost = True
        elif isinstance(outcome, asyncio.CancelledError):
            result.cancelled = True
        elif isinstance(outcome, BaseException):
            logger.exception("agent call crashed", exc_info=outcome)
            result.fatal_error = "An internal error interrupted this turn. It has been logged."
        elif outcome.status == "completed":
            assert outcome.turn_id is not None  # a completed call always has its turn
            result.completed_turn_ids.append(outcome.turn_id)
        elif outcome.status == "cancelled":
            result.cancelled = True
        elif outcome.status == "out_of_credits":
            result.out_of_credits = True
        elif outcome.status == "failed":
            result.fatal_error = outcome.error
    if failed and not (result.cancelled or result.out_of_credits or result.fatal_error or result.lease_lost):
        if len(result.completed_turn_ids) >= step.needed:
            # Enough calls completed: the round goes on without these, and the flow never plans them again.
            try:
                for call, outcome in failed:
                    await db(_give_up_call, session.pk, step.round, call, outcome.turn_id, outcome.error, owner=owner)
                cache.turns = None  # a given-up call may have added a turn: read them afresh
            except LeaseLost:
                result.lease_lost = True
        else:
            result.fatal_error = " ".join(outcome.error for _, outcome in failed)
    return result


def _give_up_call(
    session_id: int, round_number: int, call: AgentCall, turn_id: int | None, error: str, *, owner: str
) -> None:
    """Record that a call failed for good and the step went on without it (the page says who is missing)."""
    with transaction.atomic():
        fence(session_id, owner)
        if turn_id is None:  # it failed before a turn existed (e.g. the prompt could not fit)
            agent = Agent.objects.get(pk=call.agent_id)
            attempt = (
                Turn.objects.filter(session_id=session_id, round=round_number, agent_id=agent.pk)
                .order_by("-attempt")
                .values_list("attempt", flat=True)
                .first()
                or 0
            ) + 1
            turn_id = Turn.objects.create(
                session_id=session_id,
                round=round_number,
                agent=agent,
                agent_name=agent.name,
                attempt=attempt,
                status=Turn.TurnStatus.FAILED,
                slot=call.slot,
                recipe=call.recipe,
                output_kind=call.output,
                error=error[:2000],
                finished_at=timezone.now(),
            ).pk
        Turn.objects.filter(pk=turn_id).update(result={"given_up": True, "error": error[:2000]})
        ev.append_event(
            session_id=session_id,
            kind="call_given_up",
            turn_id=turn_id,
            payload={"slot": call.slot, "phase": call.phase, "error": error[:500]},
        )


@dataclass
class CallOutcome:
    status: CallStatus
    turn_id: int | None = None
    error: str = ""


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
                    _begin_turn,
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
                    await in_db_thread(_fail_turn, session.pk, turn_id, "".join(attempt.received), owner=owner)
                    return CallOutcome("failed", turn_id, INTERNAL_ERROR)
            if isinstance(decision, CallOutcome):
                return decision
            if decision == "next_model":
                break
            if decision != "refit":  # "retry" after state.delay seconds
                await _sleep(state.delay)
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
            _complete_turn,
            session,
            turn_id,
            agent,
            model,
            text,
            end,
            timing,
            call,
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
            _abandon_turn,
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
        await db(_abandon_turn, *args, "", attempt.request, status, message + note, error, owner=owner)
        state.window = _refit_window(model, attempt.estimated_tokens, error) if refit else None
        state.last_error = "" if refit else message
        return "refit" if refit else "next_model"
    plan = _retry_plan(error, state.retries, state.waited, settings.PROVIDER_MAX_RETRIES)
    turn_error = message + (f" Retrying in {plan:.1f} s." if plan is not None else "")
    await db(_abandon_turn, *args, text, attempt.request, status, turn_error, error, reasoning=reasoning, owner=owner)
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


INTERNAL_ERROR = "An internal error interrupted this turn. It has been logged."


def _retry_plan(error, retries: int, waited: float, max_retries: int) -> float | None:
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


def _refit_window(model: LLMModel, estimated_tokens: int, error) -> int:
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


def _criteria(agent: Agent) -> list[tuple[str, str, float]]:
    return [(c.name, c.description, c.weight) for c in agent.criteria.all()]


def _feedback_for(session: WritingSession, agent: Agent, cache: DriveCache | None = None) -> list[tuple[str, str]]:
    """The latest evaluation comments of each *other* agent, latest first: what matters for this turn.

    Read once per drive (`cache`), then kept up to date by _complete_turn.
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


def _begin_turn(
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
) -> tuple[int, ModelRequest, int] | CallOutcome:
    """Build the prompt, create the turn (next attempt) and reserve its worst-case credits.

    One transaction of five statements: the fenced session UPDATE (lease + the event's number), the turn,
    the balance, the ledger entry, the turn_started event. `cache` (the drive's) saves re-reading the
    references and the other agents' feedback, and keeps the reserved amount for the settlement.

    Returns (turn id, ModelRequest, estimated prompt tokens), or a CallOutcome: "too_large" when the prompt
    cannot fit `context_window` (default: the model's), "out_of_credits" when the reservation is refused.
    """
    from billing.pricing import credits_for_usage
    from billing.services import InsufficientCredits, reserve_credits
    from orchestration.flows import (
        PIPELINE_RECIPES,
        Recipe,
        call_material,
        critique_feedback,
        recipe_text,
        review_feedback,
    )
    from orchestration.flows.pipeline import material as pipeline_material
    from orchestration.flows.planned import PLANNED_RECIPES
    from orchestration.prompts import PromptInputs, PromptTooLarge, build_prompt
    from orchestration.providers import ModelRequest
    from orchestration.reasoning import plan_for_agent

    call = call or AgentCall(agent_id=agent.pk)
    recipe = recipe_text(call.recipe)
    instruction = recipe.instruction
    references = None
    if call.recipe in PIPELINE_RECIPES:  # numbered source passages and the earlier stages' output
        stage = pipeline_material(session, call)
        feedback, references, instruction = stage.feedback, stage.references, stage.instruction or instruction
    elif call.recipe in (Recipe.SYNTHESIZE, Recipe.MODERATE):
        feedback = review_feedback(call.recipe, call.inputs)
    elif call.recipe == Recipe.CRITIQUE:
        # Reviewers work independently, on the same document; a roundtable critic after round 1 also reads how
        # the moderator resolved the previous round's issues (no query for the first round or for editors).
        feedback = critique_feedback(session.flow, call.inputs)
    elif call.recipe in PLANNED_RECIPES:
        feedback = call_material(call)  # its task, then only the results it depends on
    else:
        feedback = _feedback_for(session, agent, cache)
    # Thinking shares the output allowance (and so the context window): fit and reserve for the total.
    plan = plan_for_agent(agent, model)
    if references is not None:
        pass  # the pipeline's own passages for this stage
    elif cache is None or cache.references is None:
        references = list(session.references.values_list("title", "content"))
        if cache is not None:
            cache.references = references
    else:
        references = cache.references
    try:
        prompt = build_prompt(
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
    except PromptTooLarge as error:
        return CallOutcome("too_large", None, f"{model.display_name}: {error}")
    worst_case = credits_for_usage(
        model=model, input_tokens=prompt.estimated_input_tokens, cached_tokens=0, output_tokens=plan.max_tokens
    )
    with transaction.atomic():
        # What the flow journals with the call (the planned flow's routing decision, a repair's reason).
        journal = list(call.context.get("journal", ()))
        # First: takes the session's row lock; reserves the numbers of the journal and turn_started events.
        seq = fenced_update(session.pk, owner, seqs=1 + len(journal))["last_seq"] - len(journal)
        turn = Turn.objects.create(
            session=session,
            round=round_number,
            agent=agent,
            agent_name=agent.name,
            attempt=attempt,
            model_used=model.model_id,
            prompt_notes="\n".join(prompt.notes),
            slot=call.slot,
            recipe=call.recipe,
            output_kind=call.output,
            reasoning_output=plan.output,
        )
        try:
            reserve_credits(
                user=session.project.owner,
                amount=worst_case,
                key=turn_reservation_key(turn.pk),
                description=f"{session.title}: round {round_number}, {agent.name}",
                session_id=session.pk,  # the settlement and release inherit it: usage by session
                turn_id=turn.pk,
                new_key=True,  # the turn was created just now: its key cannot have been used
            )
        except InsufficientCredits:
            transaction.set_rollback(True)
            return CallOutcome("out_of_credits")
        if cache is not None:
            cache.reserved[turn.pk] = worst_case
        started = ev.NewEvent(
            "turn_started",
            turn_id=turn.pk,
            payload={
                "round": round_number,
                "agent_id": agent.pk,
                "agent_name": agent.name,
                "model": model.display_name,
                "attempt": attempt,
                "slot": call.slot,
                "phase": call.phase,
            },
        )
        journalled = [ev.NewEvent(kind, payload, turn.pk) for kind, payload in journal]
        ev.insert_events(session_id=session.pk, first_seq=seq, events=[*journalled, started])
    request = ModelRequest(
        provider=model.provider,
        model_id=model.model_id,
        system=prompt.system,
        user=prompt.user,
        max_tokens=plan.max_tokens,
        temperature=agent.temperature,
        reasoning=plan.reasoning,
        thinking_budget=plan.thinking_budget,
        reasoning_effort=plan.reasoning_effort,
        metadata={
            "session_id": session.pk,
            "round": round_number,
            "agent_name": agent.name,
            "role": agent.role,
            "criteria": [c[0] for c in _criteria(agent)],
            "brief": session.brief,
            "recipe": call.recipe,
            "slot": call.slot,
            "task": call.task,
        },
    )
    return turn.pk, request, prompt.estimated_input_tokens


def _complete_turn(
    session: WritingSession,
    turn_id: int,
    agent: Agent,
    model: LLMModel,
    text: str,
    end: StreamEnd,
    timing: tuple[int, int | None],  # (latency, time to first token) in milliseconds
    call: AgentCall,
    *,
    reasoning: str = "",
    owner: str,
    cache: DriveCache | None = None,
    unsaved: list[ev.NewEvent] | None = None,
) -> str | None:
    """Save the turn, its evaluation, usage and charge in one transaction, exactly once.

    A reply that did not end normally (cut off, refused, filtered: see docs/providers.md) is saved with its
    stop reason and the provider's words, charged for what the provider reported, and never becomes a
    version of the document, nor a score, nor feedback for the next agent.

    `text` is the reply only; `reasoning` (the model's thinking) is saved beside it and never parsed,
    versioned or passed on. Reasoning tokens are part of `end.usage.output_tokens` and billed with them.
    `session` is the drive's copy (its document is the latest version's content); `unsaved` are the turn's
    last chunk events, saved in this transaction. Six statements in the steady state (issue 15): the fenced
    session UPDATE (lease, event numbers, totals, document), the turn claimed before anything is charged,
    the balance, the settlement, the version, the events. Returns the turn's status, None if already saved.
    """
    from billing.pricing import credits_for_usage, provider_cost_usd
    from billing.services import settle_credits
    from orchestration.evaluation import Evaluation, split_reasoning
    from orchestration.flows import parse_result

    usage = end.usage
    outcome = end.outcome
    # OpenAI-compatible reasoning models stream <think>...</think> as content: the turn's reasoning, shown to
    # the owner, never the document, the evaluation or the next prompt.
    answer, thinking = split_reasoning(text)
    reasoning = "\n\n".join(part for part in (reasoning, thinking) if part)
    if outcome == "normal":
        document, evaluation, flow_result = parse_result(
            call.recipe,
            answer,
            [(c.name, c.weight) for c in agent.criteria.all()],
            call.inputs,
            call.passages,
            call=call,
        )
        journal = flow_result.pop("_events", [])  # the flow's journal entries about this reply
        status, error = Turn.TurnStatus.COMPLETED, ""
    else:
        document, evaluation, flow_result, journal = "", Evaluation(raw=""), {}, []
        status = Turn.TurnStatus.TRUNCATED if outcome == "truncated" else Turn.TurnStatus.REFUSED
        error = abnormal_end_message(model=model, agent=agent, end=end)
    credits = credits_for_usage(
        model=model,
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
    )
    cost = provider_cost_usd(
        model=model,
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
    )
    held = cache.reserved.get(turn_id) if cache is not None else None
    charge_known = held is not None and credits <= held  # then the charge is the usage: fold it in now
    new_version = outcome == "normal" and call.writes_document and document.strip() and document != session.document
    payload = {
        "status": status,
        "scores": evaluation.scores,
        "overall": evaluation.overall,
        "tier": evaluation.tier,
        "credits": credits,
        "stop_reason": end.stop_reason,
        "usage_estimated": usage.estimated,
    }
    if error:
        payload["error"] = error
    events = [*(unsaved or []), ev.NewEvent("turn_finished", payload, turn_id)]
    events += [ev.NewEvent(kind, data, turn_id) for kind, data in journal]
    seqs = len(events) + 1 + (1 if new_version else 0)  # + the version and the totals events
    totals = {
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "provider_cost": cost,
        **({"credits_used": credits} if charge_known else {}),
    }
    changes = {"human_note": ""} if outcome == "normal" else {}
    if new_version:
        changes["document"] = document
    with transaction.atomic():
        # First the session row (the lease, like every fenced write, and the same lock order as before).
        row = fenced_update(
            session.pk,
            owner,
            seqs=seqs,
            set_fields=changes,
            add_fields=totals,
            returning=("input_tokens", "output_tokens", "reasoning_tokens", "credits_used", "current_round"),
        )
        # Claim before charging: only the executor that moves the turn out of streaming settles it.
        claimed = Turn.objects.filter(pk=turn_id, status=Turn.TurnStatus.STREAMING).update(
            status=status,
            output_text=answer,
            error=error,
            stop_reason=end.stop_reason[:40],
            scores=evaluation.scores,
            overall_score=evaluation.overall,
            parse_tier=evaluation.tier if outcome == "normal" else "",
            evaluation_raw=evaluation.raw[:20000],
            feedback=evaluation.feedback[:5000],
            result=flow_result,
            input_tokens=usage.input_tokens,
            cached_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            usage_estimated=usage.estimated,
            reasoning_tokens=usage.reasoning_tokens,
            credits=credits,
            provider_cost=cost,
            latency_ms=timing[0],
            ttft_ms=timing[1],
            finished_at=timezone.now(),
            reasoning=reasoning,
        )
        if not claimed:  # already saved by an earlier run of this step, or given up on meanwhile
            transaction.set_rollback(True)
            return None
        # Settling is idempotent on its key, and a reservation closes once: a replay charges nothing.
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
            payload["credits"] = charged
        if new_version:
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
            events.append(ev.NewEvent("version", {"number": version.number, "change_ratio": version.change_ratio}))
        # The totals as updated under the row lock: the locked values plus this turn.
        events.append(
            ev.NewEvent(
                "totals",
                {
                    "input_tokens": row["input_tokens"],
                    "output_tokens": row["output_tokens"],
                    "reasoning_tokens": row["reasoning_tokens"],
                    "credits": row["credits_used"],
                },
            )
        )
        ev.insert_events(session_id=session.pk, first_seq=row["last_seq"] - seqs + 1, events=events)
        transaction.on_commit(  # counted once the turn is saved; no query (atelier/core/metrics.py)
            partial(
                metrics.turn_finished,
                provider=model.provider,
                model=model.model_id,
                status=status,
                usage=usage,
                credits=charged,
                latency_ms=timing[0],
                ttft_ms=timing[1],
            )
        )
    if cache is not None:
        cache.reserved.pop(turn_id, None)
        if status == Turn.TurnStatus.COMPLETED and evaluation.feedback and cache.feedback is not None:
            cache.feedback[agent.pk] = (turn_id, agent.name, evaluation.feedback[:5000])
    return status


def complete_turn(
    *,
    session: WritingSession,
    turn_id: int,
    agent: Agent,
    model: LLMModel,
    text: str,
    end: StreamEnd,
    timing: tuple[int, int | None],
    call: AgentCall,
    reasoning: str = "",
    owner: str,
    cache: DriveCache | None = None,
    unsaved: list[ev.NewEvent] | None = None,
) -> str | None:
    """The engine's one path for completing and settling a streamed turn (keyword-only; see _complete_turn).

    Saves the turn, its evaluation, usage, charge (settled against its reservation), version and events in
    one fenced transaction, exactly once. `timing` is (latency, time to first token) in milliseconds.
    Returns the turn's status, or None if it was already saved. Raises LeaseLost if `owner` lost the lease.
    """
    return _complete_turn(
        session,
        turn_id,
        agent,
        model,
        text,
        end,
        timing,
        call,
        reasoning=reasoning,
        owner=owner,
        cache=cache,
        unsaved=unsaved,
    )


def abnormal_end_message(*, model: LLMModel, agent: Agent, end) -> str:
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


def _abandon_turn(
    session_id: int,
    turn_id: int,
    model: LLMModel,
    text: str,
    request,
    status: str,
    error: str,
    failure=None,
    *,
    reasoning: str = "",
    owner: str,
) -> None:
    """A turn that did not complete: keep its text, charge what was consumed, release the rest.

    What the provider reported before the failure (Anthropic's input count in message_start, kept on the
    ProviderError) is charged as reported; only the rest is estimated, and the turn says so. Providers bill
    input once a stream starts; with no text and no report they usually did not. Thinking streamed before
    the break was generated (and billed as output) too: it is kept and counted.
    """
    from billing.pricing import credits_for_usage
    from billing.services import settle_credits
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
    credits = credits_for_usage(
        model=model, input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens
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
        charged = settle_credits(
            user=session.project.owner,
            reservation_key=turn_reservation_key(turn_id),
            actual=credits,
            key=f"turn:{turn_id}:settle",
            description=f"{session.title}: interrupted turn",
        )
        Turn.objects.filter(pk=turn_id).update(
            credits=charged,
            input_tokens=input_tokens,
            cached_tokens=cached_tokens,
            output_tokens=output_tokens,
            usage_estimated=estimated,
            reasoning_tokens=reasoning_tokens,
        )
        WritingSession.objects.filter(pk=session_id).update(
            credits_used=F("credits_used") + charged,
            input_tokens=F("input_tokens") + input_tokens,
            cached_tokens=F("cached_tokens") + cached_tokens,
            output_tokens=F("output_tokens") + output_tokens,
            reasoning_tokens=F("reasoning_tokens") + reasoning_tokens,
        )
        ev.append_event(
            session_id=session_id, kind="turn_finished", payload={"status": status, "error": error}, turn_id=turn_id
        )
        used = Usage(input_tokens, output_tokens, cached_tokens, reasoning_tokens=reasoning_tokens)
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


def fail_turn(*, session_id: int, turn_id: int, text: str | None) -> None:
    """End a turn left streaming as FAILED (internal error) and release its reservation.

    For `manage.py reconcile_credits --fix`. `text`: what the turn streamed, or None to take it from the
    turn's chunk events.
    """
    if text is None:
        text = ev.streamed_text([turn_id]).get(turn_id, "")
    _fail_turn(session_id, turn_id, text)


def _fail_turn(session_id: int, turn_id: int, text: str, *, owner: str | None = None) -> None:
    """After an unexpected exception: the turn ends FAILED and its reservation is released, whatever broke.

    Each part runs on its own so one broken part (the event log, say) cannot keep the others from running.
    A reservation the settle path already closed stays closed (release is a no-op then). Anything left
    behind is found by `manage.py reconcile_credits`.
    """
    from billing.services import release_credits

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
