"""The live session page over HTTP: a long transcript in constant queries, the catch-up endpoint, the controls."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from orchestration import events as ev
from orchestration.models import (
    Agent,
    Criterion,
    DocumentVersion,
    Project,
    Status,
    StopReason,
    Turn,
    WritingSession,
)
from tests.studio_fixtures import catalogue_model


@pytest.fixture(autouse=True)
def no_worker(monkeypatch) -> list[int]:
    """Hand-offs to the worker are recorded, not run: these tests look at the page, not the engine."""
    calls: list[int] = []
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", calls.append)
    return calls


def make_session(owner, *, status: str = Status.RUNNING, title: str = "Bike lanes", rounds: int = 0) -> WritingSession:
    """A two-agent session on the demo model with `rounds` completed rounds (bulk-created, like a long run)."""
    model = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(
        project=project,
        title=title,
        brief="Argue for bike lanes.",
        status=status,
        max_rounds=max(rounds, 3),
        current_round=rounds,
        started_at=timezone.now(),
    )
    agents = [
        Agent.objects.create(session=session, order=i, name=name, role=role, model=model, role_prompt=f"You {role}.")
        for i, (name, role) in enumerate([("Writer", "writer"), ("Editor", "editor")])
    ]
    for agent in agents:
        Criterion.objects.create(agent=agent, name="Clarity", weight=1.0)
        Criterion.objects.create(agent=agent, name="Evidence", weight=2.0)
    now = timezone.now()
    turns = Turn.objects.bulk_create(
        [
            Turn(
                session=session,
                round=r,
                agent=agent,
                agent_name=agent.name,
                status=Turn.TurnStatus.COMPLETED,
                model_used="demo-writer",
                output_text=(
                    f"# Bike lanes\n\nDraft of round {r} by {agent.name}, marker TURN-{r}-{agent.order}.\n\n"
                    '<evaluation>\n{"scores": {"Clarity": 7, "Evidence": 8}}\n</evaluation>\n'
                ),
                scores={"Clarity": 7.0, "Evidence": 8.0},
                overall_score=7.7,
                parse_tier="json",
                input_tokens=100,
                output_tokens=50,
                finished_at=now,
            )
            for r in range(1, rounds + 1)
            for agent in agents
        ]
    )
    DocumentVersion.objects.bulk_create(
        [
            DocumentVersion(session=session, number=i, content=f"Version {i}", turn=turn, change_ratio=0.1)
            for i, turn in enumerate(turns, start=1)
        ]
    )
    return session


def flash(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def page_queries(client, session: WritingSession) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(session.get_absolute_url())
    assert response.status_code == 200
    return len(queries), response.content.decode()


# --- The page ----------------------------------------------------------------------------------


def test_a_200_turn_session_renders_every_turn_in_as_many_queries_as_a_2_turn_one(owner_client, owner):
    short = make_session(owner, title="Short run", rounds=1)
    long = make_session(owner, title="Long run", rounds=100)
    owner_client.get(short.get_absolute_url())  # first request of a user: account rows, caches

    short_count, short_html = page_queries(owner_client, short)
    long_count, long_html = page_queries(owner_client, long)

    assert long_count == short_count, f"{long_count} queries for 200 turns vs {short_count} for 2"
    assert long_html.count('data-testid="turn"') == 200
    assert short_html.count('data-testid="turn"') == 2
    ids = re.findall(r'id="turn-(\d+)"', long_html)
    assert sorted(map(int, ids)) == sorted(long.turns.values_list("pk", flat=True))
    assert "TURN-1-0" in long_html and "TURN-100-1" in long_html
    assert long_html.count('class="round-heading"') == 100
    # The evaluation block is shown as scores, not as the document's text.
    assert "&lt;evaluation" not in long_html and "<evaluation" not in long_html
    assert 'data-testid="scores"' in long_html


def test_page_shows_status_progress_and_title_with_status(owner_client, owner):
    session = make_session(owner, rounds=2, status=Status.PAUSED)
    WritingSession.objects.filter(pk=session.pk).update(
        stop_reason=StopReason.USER_PAUSED, stop_detail="Paused by you.", max_rounds=4
    )

    html = owner_client.get(session.get_absolute_url()).content.decode()

    assert re.search(r"<title>\s*Paused · Bike lanes", html)
    assert 'data-testid="status-badge">Paused<' in html
    assert "Round 2 of 4" in html
    assert "Paused by you." in html
    assert 'data-testid="resume"' in html and 'data-testid="pause"' not in html


def test_a_streaming_turn_shows_the_text_streamed_so_far(owner_client, owner):
    session = make_session(owner)
    agent = session.agents.first()
    turn = Turn.objects.create(session=session, round=1, agent=agent, agent_name=agent.name, model_used="demo-writer")
    ev.append_events(
        session_id=session.pk,
        events=[
            ev.NewEvent("turn_started", {"turn_id": turn.pk}, turn.pk),
            ev.NewEvent("chunk", {"text": "Protected lanes "}, turn.pk),
            ev.NewEvent("chunk", {"text": "save lives."}, turn.pk),
        ],
        broadcast=False,
    )

    html = owner_client.get(session.get_absolute_url()).content.decode()

    assert "Protected lanes save lives." in html
    assert 'data-testid="turn-status">Streaming<' in html
    assert 'data-last-seq="3"' in html


def test_another_users_session_page_is_404(client, outsider, owner):
    session = make_session(owner)
    client.force_login(outsider)
    assert client.get(session.get_absolute_url()).status_code == 404
    assert client.get(reverse("session_events", args=[session.pk])).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(client, owner):
    session = make_session(owner)
    response = client.get(session.get_absolute_url())
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- Catch-up over HTTP ------------------------------------------------------------------------


@pytest.fixture
def session_with_events(owner) -> WritingSession:
    session = make_session(owner)
    ev.append_events(
        session_id=session.pk,
        events=[ev.NewEvent("status", {"status": "running", "n": n}) for n in range(1, 6)],
        broadcast=False,
    )
    return session


def test_events_after_n_returns_only_later_events_in_order(owner_client, session_with_events):
    url = reverse("session_events", args=[session_with_events.pk])

    body = owner_client.get(url, {"after": 3}).json()

    assert [e["seq"] for e in body["events"]] == [4, 5]
    assert [e["payload"]["n"] for e in body["events"]] == [4, 5]
    assert body["last_seq"] == 5


def test_events_without_after_start_from_the_beginning(owner_client, session_with_events):
    body = owner_client.get(reverse("session_events", args=[session_with_events.pk])).json()
    assert [e["seq"] for e in body["events"]] == [1, 2, 3, 4, 5]


def test_events_after_the_last_one_is_empty_and_keeps_the_position(owner_client, session_with_events):
    body = owner_client.get(reverse("session_events", args=[session_with_events.pk]), {"after": 5}).json()
    assert body == {"events": [], "last_seq": 5}


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "", "0x10", "1e3"])
def test_a_bad_after_is_a_400_with_a_json_error(owner_client, session_with_events, after):
    response = owner_client.get(reverse("session_events", args=[session_with_events.pk]), {"after": after})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "non-negative integer" in json.loads(response.content)["error"]


def test_an_after_beyond_any_sequence_is_an_empty_answer_not_an_error(owner_client, session_with_events):
    url = reverse("session_events", args=[session_with_events.pk])
    response = owner_client.get(url, {"after": "9" * 30})
    assert response.status_code == 200
    assert response.json()["events"] == []


def test_events_endpoint_only_answers_get(owner_client, session_with_events):
    assert owner_client.post(reverse("session_events", args=[session_with_events.pk])).status_code == 405


# --- Controls ----------------------------------------------------------------------------------


def control(client, name: str, session: WritingSession, *, htmx: bool = False, data: dict | None = None):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(reverse(name, args=[session.pk]), data or {}, headers=headers)


def status_of(session: WritingSession) -> str:
    return WritingSession.objects.values_list("status", flat=True).get(pk=session.pk)


def test_pause_asks_the_running_session_to_pause_after_its_turn(owner_client, owner, no_worker):
    session = make_session(owner, status=Status.RUNNING)

    response = control(owner_client, "session_pause", session)

    assert response.status_code == 302 and response["Location"] == session.get_absolute_url()
    assert status_of(session) == Status.PAUSING
    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "Pausing after this turn." in page


def test_resume_a_paused_session_queues_it_for_the_worker(
    owner_client, owner, no_worker, django_capture_on_commit_callbacks
):
    session = make_session(owner, status=Status.PAUSED)

    with django_capture_on_commit_callbacks(execute=True):
        response = control(owner_client, "session_resume", session, htmx=True)

    assert response.status_code == 200
    assert status_of(session) == Status.QUEUED
    assert no_worker == [session.pk]
    html = response.content.decode()
    assert 'id="session-controls"' in html and 'data-testid="pause"' in html
    assert "<html" not in html  # only the controls partial


def test_resume_while_running_is_refused_with_a_clear_message(owner_client, owner):
    session = make_session(owner, status=Status.RUNNING)

    response = control(owner_client, "session_resume", session, htmx=True)

    assert response.status_code == 200
    assert "Only a paused session can be resumed." in response.content.decode()
    assert status_of(session) == Status.RUNNING


def test_a_refusal_without_htmx_is_shown_after_the_redirect(owner_client, owner):
    session = make_session(owner, status=Status.COMPLETED)

    response = control(owner_client, "session_pause", session)

    assert response.status_code == 302
    assert flash(response) == ["Only a running session can be paused."]
    page = owner_client.get(response["Location"]).content.decode()
    assert page.count("Only a running session can be paused.") == 1
    again = owner_client.get(response["Location"]).content.decode()
    assert "Only a running session can be paused." not in again  # shown once, then gone
    assert status_of(session) == Status.COMPLETED


def test_stop_a_paused_session_stops_it_at_once(owner_client, owner):
    session = make_session(owner, status=Status.PAUSED, rounds=1)

    control(owner_client, "session_stop", session)

    session.refresh_from_db()
    assert session.status == Status.STOPPED and session.stop_reason == StopReason.USER_STOPPED
    page = owner_client.get(session.get_absolute_url()).content.decode()
    assert "Stopped by you" in page and 'data-testid="continue"' in page


def test_stop_a_running_session_asks_the_executor_to_stop(owner_client, owner):
    session = make_session(owner, status=Status.RUNNING)
    WritingSession.objects.filter(pk=session.pk).update(
        lease_owner="worker-1", lease_expires_at=timezone.now() + timezone.timedelta(seconds=60)
    )

    control(owner_client, "session_stop", session, htmx=True)

    assert status_of(session) == Status.STOPPING


def test_stop_a_finished_session_is_refused(owner_client, owner):
    session = make_session(owner, status=Status.STOPPED)
    response = control(owner_client, "session_stop", session, htmx=True)
    assert "This session is not running." in response.content.decode()
    assert status_of(session) == Status.STOPPED


def test_continue_a_finished_session_for_more_rounds(owner_client, owner, no_worker):
    session = make_session(owner, status=Status.COMPLETED, rounds=1)

    response = control(owner_client, "session_continue", session, data={"extra_rounds": "2"})

    assert flash(response) == []
    session.refresh_from_db()
    assert session.status == Status.QUEUED
    assert (session.max_rounds, session.continued_at_round) == (3, 1)


def test_continue_beyond_the_plan_says_so_and_offers_nothing_silently(owner_client, owner):
    from billing.plans import FREE, PLANS

    limit = PLANS[FREE].max_rounds
    session = make_session(owner, status=Status.COMPLETED, rounds=limit)

    response = control(owner_client, "session_continue", session, htmx=True, data={"extra_rounds": "2"})

    assert f"The Free plan allows up to {limit} rounds per session." in response.content.decode()
    session.refresh_from_db()
    assert (session.status, session.max_rounds) == (Status.COMPLETED, limit)


@pytest.mark.parametrize("extra", ["0", "abc", "", "21", "-3"])
def test_continue_with_a_bad_number_of_rounds_says_what_is_allowed(owner_client, owner, extra):
    session = make_session(owner, status=Status.COMPLETED, rounds=3)

    response = control(owner_client, "session_continue", session, htmx=True, data={"extra_rounds": extra})

    assert response.status_code == 200
    assert "whole number of rounds between 1 and 20" in response.content.decode()
    assert status_of(session) == Status.COMPLETED


def test_continue_while_running_is_refused(owner_client, owner):
    session = make_session(owner, status=Status.RUNNING)
    response = control(owner_client, "session_continue", session, htmx=True, data={"extra_rounds": "2"})
    assert "Only a finished session can be continued." in response.content.decode()
    assert status_of(session) == Status.RUNNING


@pytest.mark.parametrize("name", ["session_pause", "session_resume", "session_stop", "session_continue"])
def test_controls_only_accept_post(owner_client, owner, name):
    session = make_session(owner)
    assert owner_client.get(reverse(name, args=[session.pk])).status_code == 405
    assert status_of(session) == Status.RUNNING


def test_controls_need_the_csrf_token(owner, client):
    from django.test import Client

    session = make_session(owner, status=Status.RUNNING)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)

    response = strict.post(reverse("session_pause", args=[session.pk]))

    assert response.status_code == 403
    assert status_of(session) == Status.RUNNING
