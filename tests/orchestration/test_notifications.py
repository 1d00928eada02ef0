"""The run-finished email, as a worker's mail thread sends it (orchestration.notifications)."""

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
def test_a_session_deleted_before_the_mail_thread_got_to_its_email_sends_nothing_and_raises_nothing(owner, mailoutbox):
    session = _finished_session(owner)
    session_id = session.pk
    session.project.delete()
    assert notify_run_finished(session_id) is False
    assert mailoutbox == []


@pytest.fixture
def silent_mail_server(settings):
    """An SMTP server that accepts connections and never greets; EMAIL_TIMEOUT 0.3 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", listener.getsockname()[1]
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_TIMEOUT = 0.3
    yield accepted
    listener.close()
    for connection in accepted:
        connection.close()


@pytest.mark.django_db
def test_a_mail_server_that_never_answers_fails_the_send_after_email_timeout_instead_of_holding_it(
    owner, silent_mail_server
):
    session = _finished_session(owner)
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        notify_run_finished(session.pk)
    assert silent_mail_server  # it reached the server and waited for its greeting


@pytest.mark.django_db(transaction=True)
def test_the_mail_thread_logs_a_failed_send_and_goes_on_to_the_next_email(
    owner, silent_mail_server, run_finished_emails, settings, mailoutbox, caplog
):
    first, second = _finished_session(owner), _finished_session(owner)
    assert run_finished_emails.send_later(first.pk).result(timeout=30) is False
    assert "could not send the run-finished email for session" in caplog.text
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert run_finished_emails.send_later(second.pk).result(timeout=30) is True
    assert [m.to for m in mailoutbox] == [[owner.email]]


def test_the_default_email_timeout_is_bounded():
    from django.conf import settings

    assert 0 < settings.EMAIL_TIMEOUT <= 30
