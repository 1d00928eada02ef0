"""Staff stop or pause someone's session from the staff live view: the owner sees who did it, the admin
log records it, and nobody else can (issue 14, item 20)."""

from __future__ import annotations

import threading

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from orchestration import engine, services
from orchestration.models import SessionEvent, Status, StopReason, Turn
from tests.conftest import make_user
from tests.live import wait_for
from tests.orchestration.engine_helpers import counting_replies, scored_reply, two_agent_session
from tests.orchestration.test_engine import start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(db):
    return make_user("ops@example.com", is_staff=True)


def test_staff_stop_mid_stream_reads_stopped_by_staff_to_the_owner(providers, enqueued, rich_owner, staff):
    providers.tokens_per_second = 20  # slow stream: stop it part-way
    providers.reply(scored_reply("word " * 400, 7, 7))
    session = two_agent_session(rich_owner, max_rounds=3)
    start(session, rich_owner)
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(engine.drive(session.pk)))
    runner.start()
    wait_for(lambda: SessionEvent.objects.filter(session=session, kind="chunk").count() >= 3, message="chunks")
    services.stop_session(session=session, by_staff=staff)
    runner.join(timeout=15)
    assert not runner.is_alive() and outcome == ["stopped"]
    session.refresh_from_db()
    assert session.status == Status.STOPPED
    assert session.stop_reason == StopReason.STAFF_STOPPED
    assert session.stop_detail == "Stopped by Atelier staff."
    turn = Turn.objects.get(session=session)
    assert turn.status == Turn.TurnStatus.CANCELLED and turn.error == "Stopped by Atelier staff."
    entry = LogEntry.objects.get(object_id=str(session.pk))
    assert entry.user_id == staff.pk and "Stopped" in entry.change_message


def test_staff_pause_waits_for_the_turn_then_reads_paused_by_staff(providers, enqueued, rich_owner, staff):
    providers.reply(*[counting_replies()] * 10)
    session = two_agent_session(rich_owner, max_rounds=3)
    start(session, rich_owner)
    services.pause_session(session=session, by_staff=staff)
    assert engine.drive(session.pk) == "paused"
    session.refresh_from_db()
    assert session.status == Status.PAUSED and session.stop_reason == StopReason.STAFF_PAUSED
    assert session.stop_detail.startswith("Paused by Atelier staff.")
    # The owner can resume what staff paused; their own stop then reads as theirs.
    services.resume_session(session=session, user=rich_owner)
    services.stop_session(session=session)
    session.refresh_from_db()
    assert session.stop_reason == StopReason.USER_STOPPED and session.stop_detail == "Stopped by you."
    assert LogEntry.objects.filter(object_id=str(session.pk)).count() == 1


def test_the_staff_buttons_work_from_the_read_only_page_and_the_owner_sees_who(client, enqueued, rich_owner, staff):
    session = two_agent_session(rich_owner, max_rounds=3)
    session.status = Status.PAUSED
    session.save(update_fields=["status"])
    url = reverse("session_detail", args=[session.pk])

    client.force_login(staff)
    html = client.get(url).content.decode()
    assert 'data-testid="staff-stop"' in html and 'data-testid="stop"' not in html
    response = client.post(reverse("staff_session_stop", args=[session.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "owner sees that Atelier staff did it" in response.content.decode()
    session.refresh_from_db()
    assert session.status == Status.STOPPED and session.stop_reason == StopReason.STAFF_STOPPED
    # Stopping again says why it cannot, not a 500.
    again = client.post(reverse("staff_session_stop", args=[session.pk]), HTTP_HX_REQUEST="true")
    assert again.status_code == 200 and "not running" in again.content.decode()

    client.force_login(rich_owner)
    owner_html = client.get(url).content.decode()
    assert "Stopped by Atelier staff" in owner_html and "Stopped by you" not in owner_html


def test_only_active_staff_can_use_the_staff_controls(client, enqueued, rich_owner, outsider):
    session = two_agent_session(rich_owner, max_rounds=3)
    session.status = Status.RUNNING
    session.save(update_fields=["status"])
    for user in (outsider, rich_owner, make_user("former@example.com", is_staff=True, is_active=False)):
        client.force_login(user)
        for name in ("staff_session_stop", "staff_session_pause"):
            assert client.post(reverse(name, args=[session.pk])).status_code in (302, 404), (user, name)
    session.refresh_from_db()
    assert session.status == Status.RUNNING and not LogEntry.objects.exists()
    # GET is not a way in either.
    client.force_login(make_user("ops2@example.com", is_staff=True))
    assert client.get(reverse("staff_session_stop", args=[session.pk])).status_code == 405
