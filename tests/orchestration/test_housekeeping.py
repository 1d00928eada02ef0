"""Deleting sessions (with confirmation, never while running) and searching over them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing import services as billing
from billing.models import CreditEntry
from orchestration.models import ACTIVE_STATUSES, Agent, Project, Status, Turn, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures


def _session(owner, title: str, *, status: str = Status.DRAFT, project: Project | None = None, **fields):
    project = project or Project.objects.create(owner=owner, name=f"{title} project")
    return WritingSession.objects.create(
        project=project, title=title, brief=fields.pop("brief", "b"), status=status, **fields
    )


def test_delete_asks_for_confirmation_then_removes_the_session_and_keeps_the_ledger(owner_client, owner, demo_llm):
    session = _session(owner, "Stray draft", status=Status.COMPLETED)
    agent = Agent.objects.create(session=session, name="W", model=demo_llm, role_prompt="w")
    session.threshold_agent = agent
    session.save()
    turn = Turn.objects.create(session=session, round=1, agent=agent, status=Turn.TurnStatus.COMPLETED)
    billing.reserve_credits(user=owner, amount=5, key=f"turn:{turn.pk}:reserve", session_id=session.pk)
    billing.settle_credits(
        user=owner, reservation_key=f"turn:{turn.pk}:reserve", actual=3, key=f"turn:{turn.pk}:settle"
    )

    page = owner_client.get(reverse("session_delete", args=[session.pk])).content.decode()
    assert "1 turn" in page and 'data-testid="confirm-delete"' in page
    # Without the confirmation nothing happens.
    assert owner_client.post(reverse("session_delete", args=[session.pk])).status_code == 400
    assert WritingSession.objects.filter(pk=session.pk).exists()

    response = owner_client.post(reverse("session_delete", args=[session.pk]), {"confirm": "yes"})
    assert response.status_code == 302 and response.url == reverse("project_detail", args=[session.project.pk])
    assert not WritingSession.objects.filter(pk=session.pk).exists()
    assert not Turn.objects.filter(pk=turn.pk).exists()
    assert CreditEntry.objects.filter(session_id=session.pk).count() == 2  # the ledger is append-only
    assert f"Session #{session.pk} (deleted)" in owner_client.get("/billing/").content.decode()


@pytest.mark.parametrize("status", sorted(ACTIVE_STATUSES))
def test_a_running_session_cannot_be_deleted(owner_client, owner, status):
    session = _session(owner, "Busy", status=status)
    page = owner_client.get(reverse("session_delete", args=[session.pk])).content.decode()
    assert 'data-testid="delete-refused"' in page and 'data-testid="confirm-delete"' not in page
    response = owner_client.post(reverse("session_delete", args=[session.pk]), {"confirm": "yes"})
    assert response.status_code == 302
    assert WritingSession.objects.filter(pk=session.pk).exists()
    follow = owner_client.get(response.url).content.decode()
    assert "Stop or pause it before deleting it." in follow


def test_nobody_else_can_delete_or_find_a_session(client, owner, outsider):
    session = _session(owner, "Private notes on herons")
    client.force_login(outsider)
    assert client.get(reverse("session_delete", args=[session.pk])).status_code == 404
    assert client.post(reverse("session_delete", args=[session.pk]), {"confirm": "yes"}).status_code == 404
    assert WritingSession.objects.filter(pk=session.pk).exists()
    found = client.get(reverse("session_search") + "?q=herons").content.decode()
    assert "Private notes" not in found and 'data-testid="no-results"' in found


def test_search_matches_title_brief_document_and_project_with_every_word(owner_client, owner):
    project = Project.objects.create(owner=owner, name="Birds")
    _session(owner, "Heron migration", project=project)
    _session(owner, "Untitled", brief="An essay on kingfishers and rivers")
    _session(owner, "Draft three", document="# Notes\n\nOtters and kingfishers share rivers.")
    _session(owner, "Bike lanes", status=Status.COMPLETED)

    def titles(query: str, status: str = "") -> list[str]:
        html = owner_client.get(reverse("session_search"), {"q": query, "status": status}).content.decode()
        return sorted(t for t in ("Heron migration", "Untitled", "Draft three", "Bike lanes") if t in html)

    assert titles("heron") == ["Heron migration"]
    assert titles("birds") == ["Heron migration"]  # the project's name
    assert titles("kingfishers") == ["Draft three", "Untitled"]
    assert titles("kingfishers otters") == ["Draft three"]  # every word must match
    assert titles("", status="completed") == ["Bike lanes"]
    empty = owner_client.get(reverse("session_search"), {"q": "zebra"}).content.decode()
    assert 'data-testid="no-results"' in empty
    partial = owner_client.get(
        reverse("session_search"), {"q": "heron"}, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="search-results"
    )
    assert partial.content.decode().lstrip().startswith('<div id="search-results"')
