"""Emails about runs."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection
from django.template.loader import render_to_string

from atelier.core.per_process import PerProcess
from orchestration.models import WritingSession

logger = logging.getLogger(__name__)

_mail_thread = PerProcess(lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="mail"))


def send_run_finished_email_later(session_id: int) -> Future[bool]:
    """Send the run-finished email (notify_run_finished) from this process's mail thread; return its Future
    (True if an email was sent). The engine calls it once a run's end has committed. Not from the engine's
    database thread, which every session of a worker shares (a mail server's round trips, up to EMAIL_TIMEOUT,
    would hold them all), nor as a task-queue job (it would wait in the queue ahead of runs' drive tasks: the
    200-session benchmark's hand-over p95 rose from 229 to 335 ms). A send that fails is logged, never raised;
    an email still waiting when the process dies is not sent (the run itself is saved either way)."""
    return _mail_thread.get().submit(_send, session_id)


def _send(session_id: int) -> bool:
    try:
        return notify_run_finished(session_id)
    except Exception:
        logger.exception("could not send the run-finished email for session %s", session_id)
        return False
    finally:
        connection.close()  # this thread's own connection: emails are rare, none is kept open for them


def notify_run_finished(session_id: int) -> bool:
    """Email the session's owner that its run finished (completed, stopped or failed), if their profile asks for
    it (Profile.email_on_run_finished). Returns whether an email was sent (False also when the session was
    deleted meanwhile). Raises what the mail backend raises (smtplib errors; SMTPServerDisconnected "timed out"
    once a server is silent for EMAIL_TIMEOUT seconds)."""
    session = WritingSession.objects.select_related("project__owner").filter(pk=session_id).first()
    if session is None:  # deleted (with its project or account) before the mail thread got to its email
        return False
    user = session.project.owner
    from accounts.services import get_profile

    if not user.email or not get_profile(user).email_on_run_finished:
        return False
    context = {"session": session, "url": settings.SITE_URL + session.get_absolute_url()}
    send_mail(
        subject=f"[Atelier] “{session.title}” {session.get_status_display().lower()}",
        message=render_to_string("orchestration/email/run_finished.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )
    return True
