"""django-q2 entry points. Thin: the engine does the work."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from orchestration.models import ACTIVE_STATUSES, Status, WritingSession

logger = logging.getLogger(__name__)


def enqueue_drive(session_id: int) -> None:
    async_task("orchestration.tasks.drive_session", session_id, task_name=f"session-{session_id}", group="sessions")


def drive_session(session_id: int) -> str:
    from orchestration.engine import drive

    outcome = drive(session_id)
    logger.info("session %s: %s", session_id, outcome)
    return outcome


def watchdog(stale_after_seconds: int = 30) -> int:
    """Re-dispatch sessions that should be moving but have no live executor (expired lease).

    Runs every minute from a django-q2 schedule. Covers a worker killed mid-turn and a task
    lost by the Redis broker: the session's state is in the database, so a fresh task resumes it.
    """
    now = timezone.now()
    never_claimed = Q(lease_expires_at__isnull=True, updated_at__lt=now - timedelta(seconds=stale_after_seconds))
    stale = WritingSession.objects.filter(never_claimed | Q(lease_expires_at__lt=now), status__in=ACTIVE_STATUSES)
    count = 0
    for session_id in stale.values_list("pk", flat=True):
        enqueue_drive(session_id)
        count += 1
    if count:
        logger.warning("watchdog re-dispatched %d session(s)", count)
    resume_funded_sessions()
    return count


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
