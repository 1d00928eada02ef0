"""The engine's database threads: where every drive's and conversation's database work runs.

`in_db_thread` runs a function there; `db` also hands it an events.Outbox and pushes the events the function
committed, from the calling event loop, once it returns; `in_db_thread_background` runs periodic work (the
periodic chunk saves) that may wait behind what a user is waiting for, `in_db_thread_urgent` the session
host's lease renewals, ahead of everything.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, ParamSpec, TypeVar, cast

from django.conf import settings

from atelier.core.per_process import PerProcess
from orchestration import events as ev

T = TypeVar("T")
P = ParamSpec("P")

# How long periodic work may wait behind latency-sensitive phases submitted after it (seconds). Bounded, so a
# steady stream of phases never starves it: a lease renewal still lands well within ENGINE_LEASE_SECONDS.
BACKGROUND_SLACK = 1.0
# Urgent work (one statement per host tick) goes ahead of anything queued less than this long (seconds).
URGENT_LEAD = 60.0


# A drive's phases in its first STARTUP_SECONDS (its first step: what its user waits for, the queue pickup)
# are due STARTUP_LEAD seconds early: ahead of the other drives' phases queued up to that long before them.
STARTUP_SECONDS = 5.0
STARTUP_LEAD = 1.0
_drive_started: contextvars.ContextVar[float | None] = contextvars.ContextVar("drive_started", default=None)


def drive_starting() -> None:
    """Mark the calling task (and the tasks it starts) as a drive that starts now: its database phases get
    the STARTUP_LEAD for STARTUP_SECONDS. The session host calls it at the start of every drive."""
    _drive_started.set(time.monotonic())


class DbThreads:
    """ENGINE_DB_THREADS threads (one database connection each) taking work from one queue, earliest due first.

    Work is due when submitted, plus `slack` seconds for background work: a drive's phases (its first step
    the user waits for, a turn's start and end) go ahead of periodic saves and renewals queued up to `slack`
    seconds before them. Within one priority it is first in, first out, as a plain thread pool.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._queue: list[tuple[float, int, Future[Any], Callable[[], Any]]] = []  # a heap on (due, order)
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._started = 0

    def submit(self, fn: Callable[[], T], *, slack: float = 0.0) -> Future[T]:
        """Queue fn() (due in `slack` seconds); its Future completes with what it returns or raises."""
        future: Future[T] = Future()
        with self._ready:
            heapq.heappush(self._queue, (time.monotonic() + slack, next(self._order), future, fn))
            if self._started < self.threads:  # threads start on demand, as ThreadPoolExecutor's do
                self._started += 1
                threading.Thread(target=self._work, name=f"engine-db_{self._started - 1}", daemon=True).start()
            else:
                self._ready.notify()
        return future

    @property
    def queued(self) -> int:
        """Work waiting for a thread now (benchmarks, tests)."""
        with self._ready:
            return len(self._queue)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                _, _, future, fn = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():  # its caller was cancelled while it waited
                continue
            try:
                result = fn()
            except BaseException as error:  # noqa: BLE001 - handed to the caller, as ThreadPoolExecutor does
                future.set_exception(error)
            else:
                future.set_result(result)


_db_threads = PerProcess(lambda: DbThreads(int(settings.ENGINE_DB_THREADS)))


def db_threads() -> DbThreads:
    """The process's engine database threads (created lazily, and afresh in a forked child).

    One thread by default, as asgiref's thread-sensitive executor gives, so a drive's statements share one
    connection (and SQLite never sees two writers from one engine); a plain thread hop costs about half of
    what asgiref's SyncToAsync does (issue 15: four to five hops per call). ENGINE_DB_THREADS > 1 (with the
    session host on PostgreSQL only: a system check refuses it on SQLite) gives the process's drives that
    many threads, each with its own connection: every phase is one function with its own transactions,
    fenced by the lease.
    """
    return _db_threads.get()


async def _run(slack: float, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    started = _drive_started.get()
    if not slack and started is not None and time.monotonic() - started < STARTUP_SECONDS:
        slack = -STARTUP_LEAD
    context = contextvars.copy_context()  # this task's context (log bindings) in the database thread
    future = db_threads().submit(partial(context.run, fn, *args, **kwargs), slack=slack)
    return await asyncio.wrap_future(future)


async def in_db_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run fn(*args, **kwargs) in an engine database thread (with this task's context: log bindings).

    Ahead of background work queued less than BACKGROUND_SLACK seconds earlier (and, in a drive's first
    STARTUP_SECONDS, of other phases queued less than STARTUP_LEAD earlier). Raises what fn raises.
    """
    return await _run(0.0, fn, *args, **kwargs)


async def in_db_thread_urgent(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """As in_db_thread, ahead of everything queued (the session host's one lease renewal statement per tick:
    a backlog of phases must not let its sessions' leases run out)."""
    return await _run(-URGENT_LEAD, fn, *args, **kwargs)


async def in_db_thread_background(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """As in_db_thread, for periodic work nobody is waiting for (periodic chunk saves): it waits behind
    phases submitted up to BACKGROUND_SLACK seconds after it."""
    return await _run(BACKGROUND_SLACK, fn, *args, **kwargs)


async def db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a database phase, fn(*args, outbox=..., **kwargs), in the engine's database thread, then push the
    messages it posted to its Outbox (the events it committed) from this loop.

    `fn` takes the keyword `outbox` (events.Outbox) and hands it to every event it writes. The events one
    phase committed for a session go out in one push (one group_send: two Redis round trips with no viewer,
    four with one), in their order. mypy checks `args` and `kwargs` against fn's signature (its `outbox`
    too, if a caller passes one); that fn takes `outbox` at all it cannot check here (PEP 612 allows no
    keyword beside P.kwargs): a phase without it raises TypeError on its first call.
    """
    result, pushes = await _phase(fn, *args, **kwargs)
    for push in pushes:
        await push
    return result


async def db_push_behind(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """As db(), but return as soon as the phase committed: its pushes go out behind it, in order
    (events.push_in_order), while the caller goes on (the turn's provider request, the next phase). The drive
    waits for them before it ends (engine._drive)."""
    result, _ = await _phase(fn, *args, **kwargs)
    return result


async def _phase(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[T, list[asyncio.Task[None]]]:
    """Run the phase with an Outbox; queue its committed events' pushes (events.push_in_order)."""
    outbox = ev.Outbox()
    phase = cast("Callable[..., T]", fn)  # fn(*args, outbox=outbox, **kwargs): see db()
    result = await in_db_thread(phase, *args, outbox=outbox, **kwargs)
    return result, [
        ev.push_in_order(session_id, message) for session_id, message in ev.coalesce_messages(outbox.messages)
    ]
