"""Races and per-user quotas (issue 9, cases 4, 7 and 8).

Real threads, each with its own database connection, against a real database: on PostgreSQL
(CI, DATABASE_URL) the row locks decide; on SQLite, IMMEDIATE transactions serialize writers, and
the same assertions hold. Requests go through the real views where the race is in the view.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client
from django.urls import reverse

from orchestration import services
from orchestration.models import Agent, Criterion, Project, ReferenceDocument, SessionEvent, Status, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures
from tests.studio_fixtures import settings_post_data

pytestmark = pytest.mark.django_db(transaction=True)


def _draft(owner, demo_llm, title: str = "Race", project=None) -> WritingSession:
    project = project or Project.objects.create(owner=owner, name=f"P {title}")
    session = WritingSession.objects.create(project=project, title=title, brief="Argue for bike lanes.")
    agent = Agent.objects.create(session=session, name="Writer", model=demo_llm, role_prompt="Write.")
    Criterion.objects.create(agent=agent, name="Clarity", weight=1.0)
    return session


def _together(n: int, work) -> tuple[list, list[BaseException]]:
    """Run work(i) in n threads released at once; returns (results, errors)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as error:  # noqa: BLE001 - surfaced by the assertions
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def _client(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


# --- case 8: a double-click on Start


@pytest.mark.parametrize("attempt", range(3))
def test_a_double_click_on_start_starts_once_and_never_fails(owner, demo_llm, enqueued, attempt):
    session = _draft(owner, demo_llm, title=f"Double {attempt}")
    clients = [_client(owner), _client(owner)]
    data = settings_post_data(session, title="Go")

    responses, errors = _together(2, lambda i: clients[i].post(reverse("session_start", args=[session.pk]), data))

    assert errors == []
    assert [r.status_code for r in responses] == [302, 302]
    assert {r["Location"] for r in responses} == {reverse("session_detail", args=[session.pk])}
    session.refresh_from_db()
    assert (session.status, session.title) == (Status.QUEUED, "Go")
    events = list(SessionEvent.objects.filter(session=session).order_by("seq"))
    assert [e.payload["status"] for e in events if e.kind == "status"] == [Status.QUEUED]
    assert session.last_seq == events[-1].seq == len(events)
    assert enqueued == [session.pk]


def test_a_form_holding_a_stale_row_writes_only_its_own_fields(owner, demo_llm, enqueued):
    from orchestration.forms import SessionSettingsForm

    session = _draft(owner, demo_llm)
    stale = WritingSession.objects.get(pk=session.pk)  # loaded before the other click started it
    services.start_session(session=session, user=owner)
    started = WritingSession.objects.get(pk=session.pk)

    form = SessionSettingsForm(settings_post_data(stale, title="Renamed late"), instance=stale, user=owner)
    assert form.is_valid(), form.errors
    form.save()

    now = WritingSession.objects.get(pk=session.pk)
    assert form.saved is False  # running: the builder no longer writes settings
    assert (now.status, now.last_seq, now.started_at, now.title) == (
        Status.QUEUED,
        started.last_seq,
        started.started_at,
        started.title,
    )
    # And the second start is the same result, not an error.
    assert services.start_session(session=stale, user=owner).status == Status.QUEUED


def test_settings_save_on_a_draft_leaves_engine_fields_alone(owner, demo_llm):
    from orchestration.forms import SessionSettingsForm

    session = _draft(owner, demo_llm)
    stale = WritingSession.objects.get(pk=session.pk)
    WritingSession.objects.filter(pk=session.pk).update(last_seq=7, credits_used=42)
    form = SessionSettingsForm(settings_post_data(stale, max_rounds="4"), instance=stale, user=owner)
    assert form.is_valid(), form.errors
    form.save()
    now = WritingSession.objects.get(pk=session.pk)
    assert (now.max_rounds, now.last_seq, now.credits_used) == (4, 7, 42)


# --- case 7: the Free plan's one run at a time


def test_simultaneous_starts_on_the_free_plan_run_one_session(owner, demo_llm, enqueued):
    project = Project.objects.create(owner=owner, name="Many")
    sessions = [_draft(owner, demo_llm, title=f"S{i}", project=project) for i in range(8)]

    def start(i: int) -> str:
        try:
            services.start_session(session=sessions[i], user=owner)
        except services.ServiceError as error:
            return error.message
        return "started"

    outcomes, errors = _together(8, start)

    assert errors == []
    assert outcomes.count("started") == 1, outcomes
    assert all("allows 1 run at a time" in o for o in outcomes if o != "started")
    assert WritingSession.objects.filter(project=project, status=Status.QUEUED).count() == 1


# --- case 4: the references cap and per-user quotas, under concurrency


def test_simultaneous_uploads_never_exceed_twenty_references(owner, demo_llm):
    session = _draft(owner, demo_llm)
    clients = [_client(owner) for _ in range(8)]

    def upload(i: int):
        files = [SimpleUploadedFile(f"t{i}-{n}.txt", f"Reference {i}.{n}".encode()) for n in range(10)]
        return clients[i].post(reverse("reference_add", args=[session.pk]), {"files": files}, HTTP_HX_REQUEST="true")

    responses, errors = _together(8, upload)

    assert errors == []
    assert all(r.status_code == 200 for r in responses)
    assert ReferenceDocument.objects.filter(session=session).count() == 20
    refused = [r for r in responses if "holds at most 20 reference documents" in r.content.decode()]
    assert len(refused) == 6  # two uploads of ten fit; every other one is refused whole


def test_simultaneous_project_creation_stops_at_the_quota(owner, settings):
    from billing.plans import PLANS

    limit = PLANS["free"].max_projects
    for i in range(limit - 1):
        Project.objects.create(owner=owner, name=f"Existing {i}")
    clients = [_client(owner) for _ in range(6)]

    responses, errors = _together(6, lambda i: clients[i].post(reverse("project_create"), {"name": f"New {i}"}))

    assert errors == []
    assert Project.objects.filter(owner=owner).count() == limit
    assert sum(r.status_code == 302 for r in responses) == 1
    assert all(f"keeps up to {limit} projects" in r.content.decode() for r in responses if r.status_code == 200)


def test_duplicating_sessions_stops_at_the_reference_text_quota(owner, demo_llm):
    from billing.plans import PLANS

    session = _draft(owner, demo_llm)
    chunk = "x" * 200_000
    ReferenceDocument.objects.bulk_create(
        ReferenceDocument(session=session, title=f"R{i}", content=chunk) for i in range(10)
    )  # 2 M characters per copy
    client = _client(owner)
    copies_allowed = PLANS["free"].max_reference_chars // 2_000_000 - 1
    for _ in range(copies_allowed + 3):
        client.post(reverse("session_duplicate", args=[session.pk]))
    assert WritingSession.objects.filter(project__owner=owner).count() == 1 + copies_allowed
    response = client.post(reverse("session_duplicate", args=[session.pk]), follow=True)
    assert "characters of reference documents" in response.content.decode()


def test_the_session_quota_applies_to_new_sessions(owner, demo_llm, settings, monkeypatch):
    from billing import plans

    project = Project.objects.create(owner=owner, name="Full")
    monkeypatch.setitem(plans.PLANS, "free", dataclasses.replace(plans.PLANS["free"], max_sessions=2))
    client = _client(owner)
    for i in range(3):
        client.post(reverse("session_create", args=[project.pk]), {"title": f"T{i}", "preset": ""})
    assert WritingSession.objects.filter(project=project).count() == 2
    response = client.post(reverse("session_create", args=[project.pk]), {"title": "Too many", "preset": ""})
    assert response.status_code == 200 and "keeps up to 2 sessions" in response.content.decode()
