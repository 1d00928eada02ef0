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
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from atelier.core.logs import bound
from orchestration import events as ev
from orchestration import services
from orchestration.calls import begin_lone_call, drop_unclaimed_attempt, load_team, load_turn_keys, run_call
from orchestration.chunks import ChunkBatcher
from orchestration.db_thread import db, db_push_behind, in_db_thread
from orchestration.drive_state import CallLimiter, CallOutcome, DriveCache
from orchestration.flows import AgentCall, Finished, Step, Waiting, get_policy
from orchestration.flows.base import last_done_in, note_done_turn
from orchestration.host import new_event_loop
from orchestration.lease import (
    RENEW_INTERVAL,
    LeaseLost,
    claim_lease,
    fence,
    fenced_transition,
    fenced_update,
    new_owner_id,
    release_lease,
    renew_lease,
)
from orchestration.models import (
    ALLOWED_TRANSITIONS,
    Agent,
    ReferenceDocument,
    Status,
    StopReason,
    Turn,
    WritingSession,
)
from orchestration.termination import Stop, check_after_turn, check_before_step, conditions_for
from orchestration.turns import INTERNAL_ERROR, fail_turn, recover_interrupted_turns

logger = logging.getLogger(__name__)
_Outcome = TypeVar("_Outcome", bound=str)

# One task drives a session for at most this long, then hands over to a fresh task, so a
# long run never approaches django-q2's task timeout.
DRIVE_BUDGET_SECONDS = 240
MONITOR_INTERVAL = RENEW_INTERVAL  # how often we renew the lease and look for Stop
OUT_OF_CREDITS_DETAIL = (
    "Out of credits. It carries on by itself within a minute of credits arriving "
    "(upgrade, or wait for your monthly credits)."
)

# The engine's outcomes, named (a misspelt one is a type error):
# what drive() reports for a run (docstring of drive),
DriveOutcome = Literal["busy", "idle", "paused", "stopped", "finished", "failed", "requeued", "lease_lost"]
# and what the run does after a step.
StepOutcome = Literal["continue", "paused", "failed", "stopped", "finished"]


# --- Driving ---------------------------------------------------------------------------------


def drive(session_id: int, *, budget_seconds: float = DRIVE_BUDGET_SECONDS) -> DriveOutcome:
    """Run the session until it pauses, stops, finishes or the time budget is used. Returns the outcome.

    Outcomes: busy (another executor holds it), idle, paused, stopped, finished, failed, requeued,
    lease_lost (another executor took over while this one was frozen or slow: it wrote nothing more).
    """
    return drive_with_lease(session_id, drive_leased, budget_seconds)


def drive_with_lease(
    session_id: int, driver: Callable[[int, str, float], Coroutine[object, object, _Outcome]], budget_seconds: float
) -> _Outcome | Literal["busy", "lease_lost"]:
    """Claim the session's lease, run `driver(session_id, owner, budget_seconds)` to its end on an event loop
    of its own, and release the lease. Returns the driver's outcome, "busy" (another executor holds the
    lease) or "lease_lost" (the driver raised LeaseLost: another executor took over). The one synchronous
    entry of the engine and the conversation runner (orchestration.host runs the same drivers many at once)."""
    owner = new_owner_id()
    if not claim_lease(session_id, owner):
        return "busy"
    try:
        # asyncio.run on ENGINE_EVENT_LOOP's loop; every record of this drive is bound (the runner copies the context)
        with bound(session_id=session_id), asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(driver(session_id, owner, budget_seconds))
    except LeaseLost:
        logger.warning("session %s: lease lost to another executor; standing down", session_id)
        return "lease_lost"
    finally:
        release_lease(session_id, owner)


async def drive_leased(session_id: int, owner: str, budget_seconds: float = DRIVE_BUDGET_SECONDS) -> DriveOutcome:
    """The drive coroutine of a session whose lease `owner` already holds (orchestration.host runs many in one loop).

    Outcomes as drive(). Raises LeaseLost if another executor takes the session over; the caller releases the lease.
    """
    return await _drive(session_id, owner, budget_seconds)


async def _drive(session_id: int, owner: str, budget_seconds: float) -> DriveOutcome:
    deadline = time.monotonic() + budget_seconds
    cache = DriveCache()
    try:
        # Every phase's pushes go out behind it, in commit order (events.push_in_order): the first step's status
        # push no longer holds up the first turn's start (the queue pickup), nor a between-steps push the next.
        outcome: DriveOutcome | tuple[WritingSession, Step] = await db_push_behind(
            _start_drive, session_id, owner, cache
        )
        while True:
            if isinstance(outcome, str):
                return outcome
            session, step = outcome
            # A one-call step's completion is saved by the phase after it, with the next turn's start (_between_steps).
            cache.defer_completion = len(step.calls) == 1
            result = await run_step(session, step, owner, cache)
            cache.defer_completion = False
            if result.lease_lost:
                raise LeaseLost(f"session {session_id}: lease lost during a step")
            outcome = await db_push_behind(_between_steps, session, owner, step, result, cache, deadline)
    finally:
        await ev.pushes_sent(session_id)  # every phase pushes behind the drive (db_push_behind)


def _start_drive(
    session_id: int, owner: str, cache: DriveCache, *, outbox: ev.Outbox | None = None
) -> DriveOutcome | tuple[WritingSession, Step]:
    """A drive's first database phase: the session's call limits, then _prepare_step (one thread hop: under the
    session host every hop waits for a shared event loop, and the first step's hops are the queue pickup)."""
    session = _load(session_id)
    cache.limiter = CallLimiter.for_owner(session.project.owner)
    if not getattr(session, "has_references", True):
        cache.references = []  # none to read: references cannot be added while a session is active
    return _prepare_step(session_id, owner, None, cache, session=session, outbox=outbox)


def _between_steps(
    session: WritingSession,
    owner: str,
    step: Step,
    result: StepResult,
    cache: DriveCache,
    deadline: float,
    *,
    outbox: ev.Outbox | None = None,
) -> DriveOutcome | tuple[WritingSession, Step]:
    """After a step, and before the next: one session read serves both (one thread hop, no gap for a Stop).

    A one-call step's completion left for this phase (DriveCache.deferred) is saved first, in the same
    transaction as everything after it: the turn's end and the next turn's start commit once, in one thread hop
    and one push (issue 15: a commit, a hop and a push less per sequential turn). What comes after the
    completion runs in a savepoint, so a refused reservation or a failure there never undoes the saved turn.
    `session`: the drive's session object, read afresh here (see _reload)."""
    deferred, cache.deferred = cache.deferred, None
    if deferred is None:
        return _next_after(session, owner, step, result, cache, deadline, outbox=outbox)
    failure: Exception | None = None
    try:
        with transaction.atomic():
            if deferred.save(outbox=outbox) is not None:
                try:
                    with transaction.atomic():
                        return _next_after(session, owner, step, result, cache, deadline, outbox=outbox)
                except LeaseLost:
                    raise
                except Exception as error:  # noqa: BLE001 - raised below, once the saved turn has committed
                    failure = error
            # Not claimed (ended elsewhere meanwhile): complete_turn wrote nothing; the turn is not this step's.
            _not_completed(deferred.turn_id, result, cache)
    except LeaseLost:
        raise
    except Exception:
        # The completion itself failed (a bug): nothing of it was committed. As for any crashed turn
        # (calls._attempt_on): the turn ends failed with its text, its credits released, and the run fails.
        logger.exception("turn %s crashed while being saved", deferred.turn_id)
        fail_turn(session_id=session.pk, turn_id=deferred.turn_id, text=deferred.text, owner=owner)
        _not_completed(deferred.turn_id, result, cache)
        result.fatal_error = result.fatal_error or INTERNAL_ERROR
    if failure is not None:
        raise failure
    return _next_after(session, owner, step, result, cache, deadline, outbox=outbox)


def _not_completed(turn_id: int, result: StepResult, cache: DriveCache) -> None:
    """A deferred completion that saved nothing: its turn leaves the step's completed turns, and the drive reads
    its turns afresh (the call noted this one as completed: calls._attempt_on)."""
    result.completed_turn_ids = [pk for pk in result.completed_turn_ids if pk != turn_id]
    cache.turns = None


def _next_after(
    session: WritingSession,
    owner: str,
    step: Step,
    result: StepResult,
    cache: DriveCache,
    deadline: float,
    *,
    outbox: ev.Outbox | None = None,
) -> DriveOutcome | tuple[WritingSession, Step]:
    """What the finished step leads to (_after_step) and, if the run goes on, the next step (_prepare_step)."""
    outcome, planned, session = _after_step(session, owner, step, result, cache, outbox=outbox)
    if outcome != "continue":
        return outcome
    if time.monotonic() > deadline:
        _requeue(session.pk, owner)
        return "requeued"
    return _prepare_step(session.pk, owner, planned, cache, session=session, outbox=outbox)


def _requeue(session_id: int, owner: str) -> None:
    if release_lease(session_id, owner):
        services.enqueue_run(session_id)


def _load(session_id: int) -> WritingSession:
    """The session with its project, owner and the owner's credit account (the plan's call limits), and whether
    it has references (`has_references`), one query."""
    return (
        WritingSession.objects.select_related("project__owner__credit_account")
        .annotate(has_references=Exists(ReferenceDocument.objects.filter(session=OuterRef("pk"))))
        .get(pk=session_id)
    )


def _reload(session: WritingSession) -> WritingSession:
    """The drive's session object with its row read afresh (a Stop or Pause, the totals), in place: one
    SELECT of the row alone. Its project and owner cannot change and stay loaded, and so does what the
    drive noted on it (flows.base.note_team, note_done_turn)."""
    project = session.project
    session.refresh_from_db()
    session.project = project  # refresh_from_db forgets loaded relations
    return session


def _prepare_step(
    session_id: int,
    owner: str,
    planned: Step | None = None,
    cache: DriveCache | None = None,
    *,
    session: WritingSession | None = None,
    outbox: ev.Outbox | None = None,
) -> DriveOutcome | tuple[WritingSession, Step]:
    """Handle pending status changes, recover interrupted turns, and plan the next step.

    `session`: the row as just loaded by the caller in this same call (else it is loaded here).
    Every write is fenced by the lease (raises LeaseLost if another executor took over).
    """
    session = session if session is not None else _load(session_id)
    if session.status == Status.STOPPING:
        _finish(session, Status.STOPPED, services.requested_stop(session.stop_reason), owner=owner, outbox=outbox)
        return "stopped"
    if session.status == Status.PAUSING:
        _pause(session, services.requested_stop(session.stop_reason), owner=owner, outbox=outbox)
        return "paused"
    if session.status not in (Status.QUEUED, Status.RUNNING):
        return "idle"
    if cache is None:
        recover_interrupted_turns(session, owner=owner, outbox=outbox)
    elif not cache.recovered:  # only an earlier executor can have left a turn streaming
        _recover_from_turn_keys(session, cache, owner=owner, outbox=outbox)
    if session.status == Status.QUEUED and not _move_to_running(session, owner, outbox=outbox):
        return "idle"
    stop = check_before_step(session)
    if stop:
        _finish(session, Status.COMPLETED, stop, owner=owner, outbox=outbox)
        return "finished"
    if cache is not None:
        load_team(session, cache)  # once per drive: the flows plan from it, the calls run with it
    # The previous step already asked the policy what comes next; the state has not changed since.
    decision = planned if planned is not None else get_policy(session.flow).next_step(session)
    if isinstance(decision, Waiting):  # the next move is the user's (approve the plan)
        _pause(session, Stop(decision.reason, decision.detail), owner=owner, outbox=outbox)
        return "paused"
    if isinstance(decision, Finished):
        status = Status.FAILED if decision.reason == StopReason.ERROR else Status.COMPLETED
        _finish(session, status, Stop(decision.reason, decision.detail), owner=owner, outbox=outbox)
        return "finished"
    if session.current_round != decision.round:
        _move_round(session, decision, cache, owner=owner, outbox=outbox)
    if cache is not None:
        # What the step's calls need, here in the phase that planned the step, not by database hops of their own:
        # each hop waits for the event loop the session host shares among many drives. The step's agents are in
        # cache.agents; a given-up call's turns are read afresh (run_step); a lone call's turn is begun here.
        if cache.turns is None:
            cache.turns = load_turn_keys(session.pk)
        begin_lone_call(session, decision, cache, owner=owner, outbox=outbox)
    return session, decision


def _move_to_running(session: WritingSession, owner: str, *, outbox: ev.Outbox | None) -> bool:
    """QUEUED -> RUNNING with its status event, in two statements (the fenced compare-and-swap of the status,
    the event): the first step's move, which every queue pickup waits for. False (nothing written) if a Stop
    came first. Raises LeaseLost."""
    with transaction.atomic():
        seq = fenced_transition(session.pk, owner, status_was=Status.QUEUED, status=Status.RUNNING, seqs=1)
        if seq is None:
            return False
        session.status = Status.RUNNING
        status = ev.NewEvent("status", services.status_payload(session))
        ev.insert_events(session_id=session.pk, first_seq=seq, events=[status], outbox=outbox)
    return True


def _recover_from_turn_keys(
    session: WritingSession, cache: DriveCache, *, owner: str, outbox: ev.Outbox | None
) -> None:
    """A drive's first step: read the session's agent turns once into `cache` (calls.load_turn_keys), recover
    the ones an earlier executor left streaming only if there are any, and note the latest done one for the flow
    (flows.base.note_done_turn): one query where three were sent (issue 15: each is a wait in the queue pickup).
    With no completed turn yet (a new run) there is no feedback to read either (turns._feedback_for)."""
    if cache.turns is None:
        cache.turns = load_turn_keys(session.pk)
    if any(row.status == Turn.TurnStatus.STREAMING for rows in cache.turns.values() for row in rows):
        recover_interrupted_turns(session, owner=owner, outbox=outbox)
        cache.turns = load_turn_keys(session.pk)
    cache.recovered = True
    note_done_turn(session, last_done_in(cache.turns))
    if cache.feedback is None and not any(
        row.status == Turn.TurnStatus.COMPLETED for rows in cache.turns.values() for row in rows
    ):
        cache.feedback = {}  # feedback comes only from completed agent turns (turns._feedback_for): none yet


def _move_round(
    session: WritingSession, decision: Step, cache: DriveCache | None, *, owner: str, outbox: ev.Outbox | None
) -> None:
    """Move the session to the step's round, with the round's status event. Raises LeaseLost."""
    if cache is not None and len(decision.calls) == 1:
        # The step's one turn start writes the new round and its status event (turns.begin_turn): one
        # transaction fewer per round. Until it commits the row keeps the old round, and _reload reads it back.
        session.current_round = cache.round_change = decision.round
        return
    with transaction.atomic(savepoint=False):  # no savepoint when nested: see _between_steps
        # One statement renews the lease, moves the round and reserves the status event's number.
        row = fenced_update(session.pk, owner, seqs=1, set_fields={"current_round": decision.round})
        session.current_round = decision.round
        session.status = row["status"]
        ev.insert_events(
            session_id=session.pk,
            first_seq=row["last_seq"],
            events=[ev.NewEvent("status", services.status_payload(session))],
            outbox=outbox,
        )


def _after_step(
    session: WritingSession,
    owner: str,
    step: Step,
    result: StepResult,
    cache: DriveCache,
    *,
    outbox: ev.Outbox | None = None,
) -> tuple[StepOutcome, Step | None, WritingSession]:
    """Decide what the finished step leads to: (outcome, the next step if already planned, the session read
    afresh). `session`: the drive's session object."""
    if not _saved_row_is_current(step, result, cache):
        session = _reload(session)
    cache.row_saved_by = None
    cache.round_change = None  # written with the step's turn start, or not at all (then the row says so)
    if result.out_of_credits:
        _pause(session, Stop(StopReason.OUT_OF_CREDITS, OUT_OF_CREDITS_DETAIL), owner=owner, outbox=outbox)
        return "paused", None, session
    if result.fatal_error:
        _finish(session, Status.FAILED, Stop(StopReason.ERROR, result.fatal_error), owner=owner, outbox=outbox)
        return "failed", None, session
    if session.status == Status.STOPPING or result.cancelled:
        _finish(session, Status.STOPPED, services.requested_stop(session.stop_reason), owner=owner, outbox=outbox)
        return "stopped", None, session
    if not result.completed_turn_ids:
        return "continue", None, session
    next_decision = get_policy(session.flow).next_step(session)
    round_complete = not isinstance(next_decision, Step) or next_decision.round > step.round
    if conditions_for(session):  # no stop condition set: nothing to read the turns for
        for turn in Turn.objects.filter(pk__in=result.completed_turn_ids).order_by("pk"):
            stop = check_after_turn(session, turn, round_complete)
            if stop:
                _finish(session, Status.COMPLETED, stop, owner=owner, outbox=outbox)
                return "finished", None, session
    if session.status == Status.PAUSING:
        _pause(session, services.requested_stop(session.stop_reason), owner=owner, outbox=outbox)
        return "paused", None, session
    return "continue", next_decision if isinstance(next_decision, Step) else None, session


def _saved_row_is_current(step: Step, result: StepResult, cache: DriveCache) -> bool:
    """Whether the drive's session object is as current as a read would make it: the step was one call, and its
    turn's completion, the step's last write, returned the row (turns.complete_turn). A Stop or Pause pressed
    after that is seen by the next turn start, which begins nothing then (turns.begin_turn)."""
    return len(step.calls) == 1 and result.completed_turn_ids == [cache.row_saved_by] and not result.cancelled


def _finish(session: WritingSession, status: str, stop: Stop, *, owner: str, outbox: ev.Outbox | None = None) -> None:
    """End the run (completed / stopped / failed) unless something already ended it.

    A Stop pressed while the step was finishing wins (STOPPING -> COMPLETED is not a transition):
    the run ends as stopped by the user, as _pause does. A run that already ended stays as it is.
    Raises LeaseLost if another executor holds the session.
    """
    with transaction.atomic(savepoint=False):  # no savepoint when nested: see _between_steps
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
        services.emit_status(session, outbox=outbox)
        final_events = getattr(get_policy(session.flow), "final_events", None)
        for kind, payload in final_events(session) if final_events else []:
            ev.append_event(session_id=session.pk, kind=kind, payload=payload, outbox=outbox)
        # From the process's mail thread: sent here it would hold the engine's database thread, which every
        # session of this worker shares, for the mail server's round trips.
        transaction.on_commit(partial(_email_finished, session.pk), robust=True)


def _pause(session: WritingSession, stop: Stop, *, owner: str, outbox: ev.Outbox | None = None) -> None:
    """Pause the run (or end it as stopped if a Stop was pressed meanwhile). Raises LeaseLost."""
    with transaction.atomic(savepoint=False):  # no savepoint when nested: see _between_steps
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
        services.emit_status(session, outbox=outbox)


def _email_finished(session_id: int) -> None:
    from orchestration.notifications import send_run_finished_email_later

    send_run_finished_email_later(session_id)


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
    watcher = asyncio.create_task(_watch_step(session.pk, owner, batcher, calls, done, result))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    done.set()
    batcher.wake.set()
    await watcher
    await flusher
    await batcher.flush()
    result.lease_lost = result.lease_lost or batcher.lease_lost
    if cache.begun is not None and not result.lease_lost:  # its call was cancelled before it started
        try:
            await drop_unclaimed_attempt(session.pk, cache, owner=owner)
        except LeaseLost:
            result.lease_lost = True
    failed = _tally(step, outcomes, result)
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


async def _watch_step(
    session_id: int,
    owner: str,
    batcher: ChunkBatcher,
    calls: list[asyncio.Task[CallOutcome]],
    done: asyncio.Event,
    result: StepResult,
) -> None:
    """Until `done`: renew the lease every MONITOR_INTERVAL and cancel the calls on a Stop or a lost lease.

    Under the session host, the host's one renewal statement per tick renews this lease with all the others
    (host.LeaseRenewals); a lone drive sends its own, skipped when a chunk save has just renewed it.
    """
    from orchestration import host

    renewals = host.renewals()
    statuses = (
        _renewals(session_id, owner, batcher, done) if renewals is None else renewals.statuses(session_id, owner, done)
    )
    async with contextlib.aclosing(statuses):
        async for status in statuses:
            if status is None or batcher.lease_lost:
                # Another executor owns the session now: stop streaming, write nothing more.
                result.lease_lost = True
            elif status != Status.STOPPING:
                continue
            result.cancelled = True
            for task in calls:
                task.cancel()
            return


async def _renewals(
    session_id: int, owner: str, batcher: ChunkBatcher, done: asyncio.Event
) -> AsyncGenerator[str | None, None]:
    """A lone drive's renewals, every MONITOR_INTERVAL until `done`: the status each time, None once the lease
    is lost. No statement when a chunk save has just renewed the lease and read the status."""
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), timeout=MONITOR_INTERVAL)
            return
        except TimeoutError:
            pass
        seen = batcher.status_seen
        if seen is not None and time.monotonic() - seen[0] < MONITOR_INTERVAL:
            yield seen[1]
        else:
            yield await in_db_thread(renew_lease, session_id, owner)


def _tally(
    step: Step, outcomes: list[CallOutcome | BaseException], result: StepResult
) -> list[tuple[AgentCall, CallOutcome]]:
    """Record in `result` how the step's calls ended; return the failed ones a quorum step may go on without."""
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
            result.fatal_error = INTERNAL_ERROR
        elif outcome.status == "completed":
            assert outcome.turn_id is not None  # a completed call always has its turn
            result.completed_turn_ids.append(outcome.turn_id)
        elif outcome.status == "cancelled":
            result.cancelled = True
        elif outcome.status == "out_of_credits":
            result.out_of_credits = True
        elif outcome.status == "failed":
            result.fatal_error = outcome.error
    return failed


def _give_up_call(
    session_id: int,
    round_number: int,
    call: AgentCall,
    turn_id: int | None,
    error: str,
    *,
    owner: str,
    outbox: ev.Outbox | None = None,
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
            outbox=outbox,
        )
