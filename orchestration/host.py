"""The session host: one long-lived event loop per worker process that drives many sessions at once (issue 15).

Opt-in with ENGINE_SESSIONS_PER_WORKER > 1 (default 1: each django-q2 task drives its session to the end,
one session per worker process, as before). With the host on, `tasks.drive_session` claims the session's
lease in the django-q2 task, hands the session's drive coroutine (`engine.drive_leased`, or the conversation
runner's) to this process's host and returns "accepted" at once; while the host already drives its
ENGINE_SESSIONS_PER_WORKER sessions the task waits for a free slot (backpressure: with `Q_QUEUE_LIMIT` 1 the
cluster pulls no further tasks meanwhile), at most ENGINE_HOST_WAIT_SECONDS, then puts the session back on
the queue and returns "host_full".

What stays as it was:
- Leases, fencing and Stop: the drive coroutine is the engine's own, fencing every write; the host releases
  the lease when the coroutine ends. What differs: from hand-over to the drive's end the host renews the
  leases of all its sessions in one statement every `lease.RENEW_INTERVAL` (`LeaseRenewals`), and each session's watcher
  (`engine._watch_step`) reads its status (a Stop, or a lease lost) from that statement's result, where a
  lone drive sends one renewal per session.
- Database work: every drive of the process shares the engine's database threads (`db_thread`,
  ENGINE_DB_THREADS, default one), so a worker process holds the same few PostgreSQL connections however
  many sessions it drives (the task's, the engine threads', the watchdog's). A drive's phases go ahead of
  the periodic chunk saves queued there (`db_thread.in_db_thread_background`), and the renewal statement
  ahead of everything (`db_thread.in_db_thread_urgent`).
- Crash recovery: a SIGKILLed worker takes its host and every drive in it down; the lease owners name the
  dead pid, so the watchdog of a live worker on the machine re-dispatches each session at once (elsewhere,
  when the leases run out), and interrupted turns are marked incomplete and charged 0, as without the host.
- The event loop: ENGINE_EVENT_LOOP, "uvloop" (libuv's loop: less CPU per socket read, timer and callback;
  the default where uvloop is installed) or "asyncio" (the standard library's). The host's loop and a lone
  drive's (`engine.drive_with_lease`) are both made by `new_event_loop`; the code on them is the same.
- django-q2 timeouts: the task returns as soon as the host accepted the drive, so the task timeout only
  bounds the wait for a slot (ENGINE_HOST_WAIT_SECONDS is kept below it).
- Recycling and a graceful `qcluster` stop: the host's thread is not a daemon, so when django-q2's worker
  loop ends (after `recycle` tasks, `max_rss`, or the STOP a graceful stop sends) the process exits only once
  its live drives have ended; each ends within the drive budget (DRIVE_BUDGET_SECONDS, 240 s), handing a
  longer run back to the queue. A graceful stop therefore takes up to that long; a supervisor that kills
  the process sooner leaves the watchdog to recover its sessions, exactly as after a crash.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import Future, wait
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from atelier.core.logs import bound
from atelier.core.per_process import PerProcess
from orchestration.lease import (
    RENEW_INTERVAL,
    LeaseLost,
    claim_lease_for_flow,
    new_owner_id,
    release_lease,
    renew_leases,
)

logger = logging.getLogger(__name__)

# A drive coroutine for a session whose lease `owner` holds: (session id, owner) -> outcome.
Driver = Callable[[int, str], Awaitable[str]]

_host: PerProcess[SessionHost] = PerProcess(lambda: SessionHost(int(settings.ENGINE_SESSIONS_PER_WORKER)))


def renewals() -> LeaseRenewals | None:
    """The lease renewals of the host whose loop runs the caller; None outside a host (a lone drive)."""
    current = _host.current()
    if current is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return current.renewals if loop is current._loop else None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ENGINE_EVENT_LOOP names: "uvloop" or "asyncio" (the standard library's).

    Used for the host's loop and as the loop factory of a lone drive. Under 200 streaming sessions the host's
    one loop is the worker's bottleneck (issue 15: it ran 165-750 ms late): uvloop spends less CPU per
    stream read and callback. Raises ImportError when "uvloop" is configured but not installed.
    """
    if settings.ENGINE_EVENT_LOOP == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def enabled() -> bool:
    """True when worker processes drive several sessions each (ENGINE_SESSIONS_PER_WORKER > 1)."""
    return int(settings.ENGINE_SESSIONS_PER_WORKER) > 1


def get_host() -> SessionHost:
    """This process's host (started on first use, and afresh in a forked child)."""
    return _host.get()


class SessionHost:
    """An event loop on a thread of its own, driving at most `capacity` sessions concurrently."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._live: dict[int, Future[str]] = {}  # session id -> its drive
        self._live_lock = threading.Lock()
        self._loop = new_event_loop()
        self.renewals = LeaseRenewals()
        self._thread = threading.Thread(target=self._run, name="atelier-session-host", daemon=False)
        self._thread.start()

    @property
    def live(self) -> int:
        """How many sessions this host drives now."""
        with self._live_lock:
            return len(self._live)

    def submit(self, session_id: int, driver_for: Callable[[str], Driver], *, wait_seconds: float) -> str:
        """Claim the session's lease and start driving it here with `driver_for(its flow)`. Returns at once with
        the outcome of the hand-over (one statement: lease.claim_lease_for_flow).

        "accepted" (the host drives it now), "busy" (another executor holds its lease, or this host already
        drives it) or "host_full" (no slot freed within `wait_seconds`: the caller should queue it again).
        Runs in the django-q2 task's thread; the claim uses that thread's connection.
        """
        with self._live_lock:
            if session_id in self._live:
                return "busy"
        if not self._slots.acquire(timeout=wait_seconds):
            return "host_full"
        try:
            owner = new_owner_id()
            flow = claim_lease_for_flow(session_id, owner)
            if flow is None:
                self._slots.release()
                return "busy"
            driver = driver_for(flow)
            with self._live_lock:
                future = asyncio.run_coroutine_threadsafe(self._drive(session_id, owner, driver), self._loop)
                self._live[session_id] = future
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._done(session_id))
        return "accepted"

    def drive_of(self, session_id: int) -> Future[str] | None:
        """The drive of this session in progress here (its outcome once it ends), or None."""
        with self._live_lock:
            return self._live.get(session_id)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no session is driven here (tests, shutdown). True if none is left."""
        with self._live_lock:
            futures = list(self._live.values())
        wait(futures, timeout)
        return self.live == 0

    def _done(self, session_id: int) -> None:
        with self._live_lock:
            self._live.pop(session_id, None)
        self._slots.release()

    async def _drive(self, session_id: int, owner: str, driver: Driver) -> str:
        from orchestration.db_thread import drive_starting, in_db_thread

        drive_starting()  # its first phases go ahead of the other drives' (the user waits for them)
        # Renewed on every tick from now until the drive ends, steps or not: a slow first phase under load
        # never lets the claim's lease run out.
        self.renewals.watch(session_id, owner)
        with bound(session_id=session_id):
            try:
                outcome = await driver(session_id, owner)
            except LeaseLost:
                logger.warning("session %s: lease lost to another executor; standing down", session_id)
                outcome = "lease_lost"
            except Exception:
                logger.exception("session %s: drive failed", session_id)
                outcome = "error"
            finally:
                self.renewals.unwatch(session_id)
                await in_db_thread(release_lease, session_id, owner)
            logger.info("session %s: %s", session_id, outcome)
            return outcome

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.create_task(self._exit_after_main())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
            close_old_connections()

    async def _exit_after_main(self) -> None:
        """Stop the loop once the process's main thread has ended (django-q2's worker loop returned:
        recycle, max_rss or a graceful stop) and no drive is left, so the process can exit."""
        main = threading.main_thread()
        load = _LoadReport()
        while main.is_alive() or self.live:
            before = time.monotonic()
            await asyncio.sleep(0.5)
            load.tick(time.monotonic() - before - 0.5, self.live)
        self._loop.stop()


class _LoadReport:
    """Logs how loaded a busy host is, every REPORT_SECONDS while it drives sessions: the sessions, the event
    loop's worst lag (how late a 0.5 s sleep woke) and the database threads' queue (what waits for a thread)."""

    REPORT_SECONDS = 5.0

    def __init__(self) -> None:
        self.worst_lag = 0.0
        self.since = time.monotonic()

    def tick(self, lag: float, live: int) -> None:
        from orchestration.db_thread import db_threads

        self.worst_lag = max(self.worst_lag, lag)
        if time.monotonic() - self.since < self.REPORT_SECONDS:
            return
        if live:
            logger.info(
                "session host: %s sessions, event loop lag up to %.0f ms, %s phases waiting for a database thread",
                live, self.worst_lag * 1000, db_threads().queued,
            )  # fmt: skip
        self.worst_lag, self.since = 0.0, time.monotonic()


class LeaseRenewals:
    """One lease renewal statement per RENEW_INTERVAL for every session the host drives.

    The host registers each drive's lease (`watch`) for the drive's life; each tick renews every lease
    registered before it in one statement (lease.renew_leases, ahead of everything queued on the database
    threads) and resolves `upcoming` with {session id: status} for the leases still held, so a step's
    monitor (`statuses`) sees a Stop or a lost lease within about one interval, as a lone drive's own
    renewals do. Runs on the host's loop only; the tick task runs while some lease is registered.
    """

    def __init__(self) -> None:
        self._leases: dict[int, str] = {}  # session id -> owner
        self._upcoming: asyncio.Future[dict[int, str] | None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.statements = 0  # renewal ticks that reached the database (tests, benchmarks)

    async def statuses(self, session_id: int, owner: str, done: asyncio.Event) -> AsyncGenerator[str | None, None]:
        """This lease's status from every tick until `done`: the session's status, None once the lease is lost.

        The lease is renewed on every tick while the host drives the session (SessionHost._drive watches it
        for the drive's whole life); close this (contextlib.aclosing) to stop reading."""
        ended = asyncio.ensure_future(done.wait())
        self.watch(session_id, owner)  # already watched by the drive: this only makes sure the ticks run
        try:
            while not done.is_set():
                tick = self.upcoming
                either: list[asyncio.Future[Any]] = [ended, tick]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if done.is_set():
                    return
                if (held := tick.result()) is not None:  # None: the renewal failed this time, no news
                    yield held.get(session_id)
        finally:
            ended.cancel()

    def watch(self, session_id: int, owner: str) -> None:
        """Renew this lease on every tick until `unwatch`."""
        self._leases[session_id] = owner
        if self._ticker is None or self._ticker.done():
            # A context of its own: not the first drive's (its log bindings, its start-up priority).
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), context=contextvars.Context())

    def unwatch(self, session_id: int) -> None:
        """Stop renewing this session's lease (its drive ended)."""
        self._leases.pop(session_id, None)

    @property
    def idle(self) -> bool:
        """No tick running or due (no lease watched since the last one): tests, benchmarks."""
        return self._ticker is None or self._ticker.done()

    @property
    def upcoming(self) -> asyncio.Future[dict[int, str] | None]:
        """The next tick's result for every lease watched now: {session id: status} of the leases still held,
        or None if the renewal failed (no news: wait for the next one)."""
        if self._upcoming is None or self._upcoming.done():
            self._upcoming = asyncio.get_running_loop().create_future()
        return self._upcoming

    async def _tick(self) -> None:
        from orchestration.db_thread import in_db_thread_urgent

        while self._leases:
            await asyncio.sleep(RENEW_INTERVAL)
            if not self._leases:
                break
            # The leases and the waiters of this tick, taken together: a lease watched from now on waits for
            # the next tick, so no watcher reads a result its lease was not in.
            leases, waiters, self._upcoming = dict(self._leases), self._upcoming, None
            held: dict[int, str] | None = None
            try:
                held = await in_db_thread_urgent(renew_leases, leases)
                self.statements += 1
            except Exception:  # a database hiccup: no news this tick (the leases last ENGINE_LEASE_SECONDS)
                logger.exception("lease renewal of %s sessions failed", len(leases))
            if waiters is not None and not waiters.done():
                waiters.set_result(held)
