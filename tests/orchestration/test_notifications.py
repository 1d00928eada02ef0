"""The run-finished email, as the task queue sends it (orchestration.notifications.notify_run_finished)."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from orchestration.models import Status
from orchestration.notifications import notify_run_finished
from tests.orchestration.engine_helpers import two_agent_session


def _finished_session(owner):
    session = two_agent_session(owner, max_rounds=1)
    session.status = Status.COMPLETED
    session.save(update_fields=["status"])
    return session


@pytest.mark.django_db
def test_a_session_deleted_before_the_queue_got_to_its_email_sends_nothing_and_raises_nothing(owner, mailoutbox):
    session = _finished_session(owner)
    session_id = session.pk
    session.project.delete()
    assert notify_run_finished(session_id) is False
    assert mailoutbox == []


@pytest.mark.django_db
def test_a_mail_server_that_never_answers_fails_the_task_after_email_timeout_instead_of_holding_it(owner, settings):
    """A server that accepts the connection and never greets: the send raises once EMAIL_TIMEOUT has passed
    (the task fails and shows under Failed tasks) instead of holding its worker indefinitely."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", listener.getsockname()[1]
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 0.3
    session = _finished_session(owner)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            notify_run_finished(session.pk)
        assert accepted  # it reached the server and waited for its greeting
    finally:
        for connection in accepted:
            connection.close()
        listener.close()


def test_the_default_email_timeout_is_bounded():
    from django.conf import settings

    assert 0 < settings.EMAIL_TIMEOUT <= 30
