"""Emails about runs."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from orchestration.models import WritingSession


def notify_run_finished(session_id: int) -> bool:
    session = WritingSession.objects.select_related("project__owner").get(pk=session_id)
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
