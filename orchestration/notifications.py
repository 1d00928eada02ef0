"""Emails about runs."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from orchestration.models import WritingSession


def notify_run_finished(session_id: int) -> bool:
    """Email the session's owner that its run finished (completed, stopped or failed), if their profile asks for
    it (Profile.email_on_run_finished). Returns whether an email was sent (False also when the session was
    deleted meanwhile). A django-q2 task (tasks.enqueue_run_finished_email): raises what the mail backend
    raises (smtplib errors; SMTPServerDisconnected "timed out" once a server is silent for EMAIL_TIMEOUT
    seconds), which django-q2 records as a failed task."""
    session = WritingSession.objects.select_related("project__owner").filter(pk=session_id).first()
    if session is None:  # deleted (with its project or account) before the queue got to the email
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
