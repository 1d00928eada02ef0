"""The session host: one long-lived event loop per worker process that drives many sessions at once (issue 15).

Opt-in with ENGINE_SESSIONS_PER_WORKER > 1 (default 1: each django-q2 task drives its session to the end,
one session per worker process, as before). With the host on, `tasks.drive_session` claims the session's
lease in the django-q2 task, hands the session's drive coroutine (`engine.drive_leased`, or the conversation
runner's) to this process's host and returns "accepted" at once; while the host already drives its
ENGINE_SESSIONS_PER_WORKER sessions the task waits for a free slot (backpressure: with `Q_QUEUE_LIMIT` 1 the
cluster pulls no further tasks meanwhile), at most ENGINE_HOST_WAIT_SECONDS, then puts the session back on
the queue and returns "host_full".

What stays as it was:
- Leases, fencing and Stop: the drive coroutine is the engine's own, renewing its lease every
  `lease.RENEW_INTERVAL` and fencing every write; the host releases the lease when the coroutine ends.
- Database work: every drive of the process shares the engine's one database thread (`db_thread.in_db_thread`),
  so a worker process holds the same few PostgreSQL connections however many sessions it drives (the task's,
  the engine thread's, the watchdog's).
- Crash recovery: a SIGKILLed worker takes its host and every drive in it down; the lease owners name the
  dead pid, so the watchdog of a live worker on the machine re-dispatches each session at once (elsewhere,
  when the leases run out), and interrupted turns are marked incomplete and charged 0, as without the host.
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
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, wait

from django.conf import settings
from django.db import close_old_connections

from atelier.core.logs import bound
from orchestration.lease import LeaseLost, claim_lease, new_owner_id, release_lease

logger = logging.getLogger(__name__)

# A drive coroutine for a session whose lease `owner` holds: (session id, owner) -> outcome.
Driver = Callable[[int, str], Awaitable[str]]

_host: SessionHost | None = None
_host_lock = threading.Lock()


def enabled() -> bool:
    """True when worker processes drive several sessions each (ENGINE_SESSIONS_PER_WORKER > 1)."""
    return int(settings.ENGINE_SESSIONS_PER_WORKER) > 1


def get_host() -> SessionHost:
    """This process's host (started on first use, and afresh in a forked child)."""
    global _host
    with _host_lock:
        if _host is None or _host.pid != os.getpid():
            _host = SessionHost(int(settings.ENGINE_SESSIONS_PER_WORKER))
        return _host


class SessionHost:
    """An event loop on a thread of its own, driving at most `capacity` sessions concurrently."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.pid = os.getpid()
        self._slots = threading.BoundedSemaphore(capacity)
        self._live: dict[int, Future[str]] = {}  # session id -> its drive
        self._live_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="atelier-session-host", daemon=False)
        self._thread.start()

    @property
    def live(self) -> int:
        """How many sessions this host drives now."""
        with self._live_lock:
            return len(self._live)

    def submit(self, session_id: int, driver: Driver, *, wait_seconds: float) -> str:
        """Claim the session's lease and start driving it here. Returns at once with the outcome of the hand-over.

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
            if not claim_lease(session_id, owner):
                self._slots.release()
                return "busy"
            with self._live_lock:
                future = asyncio.run_coroutine_threadsafe(self._drive(session_id, owner, driver), self._loop)
                self._live[session_id] = future
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._done(session_id))
        return "accepted"

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
        from orchestration.db_thread import in_db_thread

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
        while main.is_alive() or self.live:
            await asyncio.sleep(0.5)
        self._loop.stop()
