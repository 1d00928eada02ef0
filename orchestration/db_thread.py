"""The engine's one database thread: where every drive's and conversation's database work runs.

`in_db_thread` runs a function there; `db` also hands it an events.Outbox and pushes the events the function
committed, from the calling event loop, once it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ParamSpec, TypeVar

from django.conf import settings

from orchestration import events as ev

T = TypeVar("T")
P = ParamSpec("P")


_db_executor: tuple[int, ThreadPoolExecutor] | None = None  # (pid, the engine's database thread)


def _db_thread() -> ThreadPoolExecutor:
    """The process's one engine database thread (created lazily, and afresh in a forked child).

    One thread, as asgiref's thread-sensitive executor gives, so a drive's statements share one connection
    (and SQLite never sees two writers from one engine); a plain executor hop costs about half of what
    asgiref's SyncToAsync does (issue 15: four to five hops per call). ENGINE_DB_THREADS > 1 (with the
    session host on PostgreSQL, orchestration/host.py) gives the process's drives that many threads, each
    with its own connection: every phase is one function with its own transactions, fenced by the lease.
    """
    global _db_executor
    if _db_executor is None or _db_executor[0] != os.getpid():
        threads = int(settings.ENGINE_DB_THREADS)
        _db_executor = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="engine-db"))
    return _db_executor[1]


async def in_db_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run fn(*args, **kwargs) in the engine's database thread (with this task's context: log bindings)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_db_thread(), partial(context.run, fn, *args, **kwargs))


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database phase, fn(*args, outbox=..., **kwargs), in the engine's database thread, then push the
    messages it posted to its Outbox (the events it committed) from this loop.

    `fn` takes the keyword `outbox` (events.Outbox) and hands it to every event it writes. The events one
    phase committed for a session go out in one push (one group_send: two Redis round trips with no viewer,
    four with one), in their order.
    """
    outbox = ev.Outbox()
    result = await in_db_thread(fn, *args, outbox=outbox, **kwargs)
    for session_id, message in ev.coalesce_messages(outbox.messages):
        await ev.push_message(session_id, message)
    return result
