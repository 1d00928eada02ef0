"""django-q2 entry points. Thin: the engine does the work."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from django_q.tasks import async_task

from orchestration import host, lease
from orchestration.events import compact_streamed_text
from orchestration.models import ACTIVE_STATUSES, Status, WritingSession

logger = logging.getLogger(__name__)


def enqueue_drive(session_id: int) -> None:
    async_task("orchestration.tasks.drive_session", session_id, task_name=f"session-{session_id}", group="sessions")


def drive_session(session_id: int) -> str:
    """The drive task: run the session (outcomes as engine.drive), or hand it to this process's session host.

    With ENGINE_SESSIONS_PER_WORKER > 1 the session is driven by orchestration.host and this returns
    "accepted" once the host took it ("busy" if another executor holds it, "host_full" after the session
    was put back on the queue because the host stayed full for ENGINE_HOST_WAIT_SECONDS).
    """
    if host.enabled():
        # The host's claim returns the flow: the hand-over is one statement.
        outcome = host.get_host().submit(session_id, _leased_driver, wait_seconds=settings.ENGINE_HOST_WAIT_SECONDS)
        if outcome == "host_full":
            enqueue_drive(session_id)
        logger.info("session %s: %s", session_id, outcome)
        return outcome
    # A conversation's hidden session is driven by the conversation runner (same lease, events and billing).
    flow = WritingSession.objects.filter(pk=session_id).values_list("flow", flat=True).first()
    if flow == "conversation":
        from orchestration.conversations.runner import drive
    else:
        from orchestration.engine import drive

    outcome = drive(session_id)
    logger.info("session %s: %s", session_id, outcome)
    return outcome


def _leased_driver(flow: str) -> host.Driver:
    """The session host's driver for a session of `flow` whose lease is held: the conversation runner's for a
    conversation's hidden session, else the engine's."""
    if flow == "conversation":
        from orchestration.conversations.runner import drive_leased
    else:
        from orchestration.engine import drive_leased
    return drive_leased


def watchdog(stale_after_seconds: int = 30, *, resume_funded: bool = True) -> int:
    """Re-dispatch sessions that should be moving but have no live executor. Returns how many.

    A session needs a new executor when its lease expired (the worker died, froze or lost its
    network), when the lease's owner is a process on this machine that no longer exists (a worker
    killed and restarted here: no need to wait for the lease to run out), or when it was queued
    `stale_after_seconds` ago and never claimed (a task lost by the Redis broker). Each one is
    handed to the queue once (lease.mark_dispatched), so watchdogs running in every worker never
    enqueue it twice. Runs every ENGINE_WATCHDOG_SECONDS in each worker (start_watchdog_thread)
    and every minute from the django-q2 schedule, which also resumes sessions paused for credits and
    compacts the streamed text of turns that ended long ago (events.compact_streamed_text).
    One query when nothing is stuck.
    """
    now = timezone.now()
    rows = WritingSession.objects.filter(status__in=ACTIVE_STATUSES).values_list(
        "pk", "lease_owner", "lease_expires_at", "updated_at"
    )
    count = 0
    for session_id, owner, expires_at, updated_at in rows:
        if expires_at is None:
            stuck = updated_at < now - timedelta(seconds=stale_after_seconds)
        else:
            stuck = expires_at < now or (
                not owner.startswith(lease.DISPATCH_PREFIX) and lease.owner_is_dead_here(owner)
            )
        if stuck and lease.mark_dispatched(
            session_id,
            seen_owner=owner,
            seen_expires_at=expires_at,
            # A handed-over task can die with the worker that pulled it: try again after two leases.
            dispatch_seconds=2 * settings.ENGINE_LEASE_SECONDS,
        ):
            enqueue_drive(session_id)
            count += 1
    if count:
        logger.warning("watchdog re-dispatched %d session(s)", count)
    if resume_funded:
        resume_funded_sessions()
        compact_streamed_text()
    return count


def start_watchdog_thread(interval: float | None = None) -> threading.Thread:
    """Run the watchdog every `interval` seconds (ENGINE_WATCHDOG_SECONDS) in a daemon thread.

    Started in every django-q2 worker process when it spawns (orchestration.apps), so a session
    whose worker died is resumed within about lease + interval seconds, and at once when a worker
    restarts on the machine where the dead one ran. Django's schedules cannot run more often than
    once a minute, hence a thread. It only reads, then hands sessions to the queue.
    """
    interval = settings.ENGINE_WATCHDOG_SECONDS if interval is None else interval

    def loop() -> None:
        while True:
            try:
                watchdog(resume_funded=False)
            except Exception:
                logger.exception("watchdog pass failed")
            finally:
                close_old_connections()
            time.sleep(interval * random.uniform(0.8, 1.2))

    thread = threading.Thread(target=loop, name="atelier-watchdog", daemon=True)
    thread.start()
    return thread


def resume_funded_sessions() -> int:
    """Sessions paused for lack of credits carry on by themselves once their owner has credits again."""
    from billing.services import get_balance
    from orchestration import services
    from orchestration.models import StopReason

    resumed = 0
    waiting = WritingSession.objects.filter(status=Status.PAUSED, stop_reason=StopReason.OUT_OF_CREDITS)
    for session in waiting.select_related("project__owner"):
        if get_balance(session.project.owner) <= 0:
            continue
        try:
            services.resume_session(session=session, user=session.project.owner)
            resumed += 1
        except services.ServiceError as error:
            logger.info("session %s stays paused: %s", session.pk, error.message)
    return resumed
