"""Dashboard and project pages: what a user sees, and that nobody else can see or change it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration.models import Agent, Project, Status, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_new_user_sees_one_demo_button_on_an_empty_dashboard(owner_client):
    response = owner_client.get(reverse("dashboard"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-testid="empty-dashboard"' in html
    assert html.count('data-testid="try-demo"') == 1


def test_try_the_demo_team_creates_a_ready_session_on_the_short_path(owner_client, owner, demo_llm, cheap_llm):
    from accounts.models import Profile

    # Even with a paid default model the demo runs on the offline Demo model.
    Profile.objects.update_or_create(user=owner, defaults={"default_model": cheap_llm})
    response = owner_client.post(reverse("demo_quickstart"))
    session = WritingSession.objects.get(project__owner=owner)
    assert response.status_code == 302
    assert response.url == reverse("demo_ready", args=[session.pk])
    assert session.status == Status.DRAFT
    assert session.brief.strip()
    agents = list(session.agents.all())
    assert [a.name for a in agents] == ["Academic writer", "Critical editor"]
    assert all(a.model == demo_llm for a in agents)
    assert all(a.criteria.count() >= 3 for a in agents)
    assert session.max_rounds == 4 and session.score_threshold == 8.5
    ready = owner_client.get(response.url).content.decode()
    assert "Academic writer" in ready and 'data-testid="demo-start"' in ready
    # The full builder is one click away.
    assert reverse("session_edit", args=[session.pk]) in ready
    assert session.references.count() == 1 and "sample material" in session.references.get().content


def test_the_demo_session_passes_the_engines_start_checks(owner_client, owner, demo_llm):
    pytest.importorskip("orchestration.catalogue")
    from orchestration.services import validate_for_start

    owner_client.post(reverse("demo_quickstart"))
    assert validate_for_start(WritingSession.objects.get(project__owner=owner)) == []


def test_dashboard_lists_projects_recent_sessions_and_balance(owner_client, draft):
    draft.status = Status.RUNNING
    draft.save()
    html = owner_client.get(reverse("dashboard")).content.decode()
    assert "Essays" in html
    assert "On bike lanes" in html and "badge-running" in html
    assert 'data-testid="balance"' in html
    # Something is running, so the recent list refreshes itself.
    assert 'hx-trigger="every 4s"' in html


def test_dashboard_refresh_returns_only_the_recent_sessions(owner_client, draft):
    response = owner_client.get(reverse("dashboard") + "?part=recent", **HTMX)
    html = response.content.decode()
    assert 'id="recent-sessions"' in html
    assert "<html" not in html and "Projects" not in html
    # Nothing is active: the refreshed list stops polling.
    assert "every 4s" not in html


def test_create_rename_archive_unarchive_and_delete_a_project(owner_client, owner):
    response = owner_client.post(reverse("project_create"), {"name": "Grant proposal", "description": ""})
    project = Project.objects.get(owner=owner)
    assert response.url == reverse("project_detail", args=[project.pk])

    owner_client.post(reverse("project_rename", args=[project.pk]), {"name": "NSF proposal", "description": "x"})
    project.refresh_from_db()
    assert project.name == "NSF proposal"

    owner_client.post(reverse("project_archive", args=[project.pk]))
    project.refresh_from_db()
    assert project.archived_at is not None
    dashboard = owner_client.get(reverse("dashboard")).content.decode()
    assert f'href="{reverse("project_detail", args=[project.pk])}"' not in dashboard
    assert "1 archived project" in dashboard
    assert "NSF proposal" in owner_client.get(reverse("project_archived")).content.decode()

    owner_client.post(reverse("project_archive", args=[project.pk]))
    project.refresh_from_db()
    assert project.archived_at is None

    confirm = owner_client.get(reverse("project_delete", args=[project.pk]))
    assert "cannot be undone" in confirm.content.decode()
    refused = owner_client.post(reverse("project_delete", args=[project.pk]), {"confirm_name": "wrong"})
    assert refused.status_code == 400 and Project.objects.filter(pk=project.pk).exists()
    owner_client.post(reverse("project_delete", args=[project.pk]), {"confirm_name": "NSF proposal"})
    assert not Project.objects.filter(pk=project.pk).exists()


def test_blank_project_name_is_refused_with_a_message(owner_client, project):
    response = owner_client.post(reverse("project_rename", args=[project.pk]), {"name": ""}, **HTMX)
    assert "This field is required" in response.content.decode()
    project.refresh_from_db()
    assert project.name == "Essays"


def test_a_project_with_a_running_session_cannot_be_deleted(owner_client, draft):
    draft.status = Status.RUNNING
    draft.save()
    owner_client.post(reverse("project_delete", args=[draft.project_id]), {"confirm_name": "Essays"})
    assert Project.objects.filter(pk=draft.project_id).exists()


def test_project_sessions_filter_by_status_over_htmx(owner_client, draft):
    WritingSession.objects.create(project=draft.project, title="Finished one", brief="b", status=Status.COMPLETED)
    url = reverse("project_detail", args=[draft.project_id])
    response = owner_client.get(url + "?status=completed", HTTP_HX_TARGET="project-sessions", **HTMX)
    html = response.content.decode()
    assert "Finished one" in html and "On bike lanes" not in html
    assert "<html" not in html
    full = owner_client.get(url).content.decode()
    assert "Finished one" in full and "On bike lanes" in full
    assert "No sessions with this status" in owner_client.get(url + "?status=failed").content.decode()


# --- ownership: every project and builder URL is a 404 for someone else


def _urls_for(session: WritingSession) -> list[tuple[str, str, dict]]:
    project = session.project
    agent = session.agents.first()
    ref = session.references.create(title="Notes", content="Some notes")
    s, a = session.pk, agent.pk
    return [
        ("get", reverse("project_detail", args=[project.pk]), {}),
        ("post", reverse("project_rename", args=[project.pk]), {"name": "Mine now"}),
        ("post", reverse("project_archive", args=[project.pk]), {}),
        ("get", reverse("project_delete", args=[project.pk]), {}),
        ("post", reverse("project_delete", args=[project.pk]), {"confirm_name": project.name}),
        ("get", reverse("session_create", args=[project.pk]), {}),
        ("post", reverse("session_create", args=[project.pk]), {"title": "x"}),
        ("get", reverse("session_edit", args=[s]), {}),
        ("post", reverse("session_edit", args=[s]), {"title": "hijacked", "flow": "sequential", "max_rounds": "2"}),
        ("post", reverse("session_start", args=[s]), {"title": "x", "flow": "sequential", "max_rounds": "2"}),
        ("get", reverse("session_estimate", args=[s]), {}),
        ("get", reverse("session_threshold_field", args=[s]), {}),
        ("post", reverse("session_duplicate", args=[s]), {}),
        ("post", reverse("agent_add", args=[s]), {}),
        ("post", reverse("agent_update", args=[s, a]), {f"agent-{a}-name": "x"}),
        ("post", reverse("agent_remove", args=[s, a]), {}),
        ("post", reverse("agent_move", args=[s, a]), {"direction": "down"}),
        ("post", reverse("session_preset_apply", args=[s]), {"preset": "blank"}),
        ("post", reverse("session_preset_save", args=[s]), {"name": "stolen team"}),
        ("post", reverse("reference_add", args=[s]), {"title": "t", "content": "c"}),
        ("post", reverse("reference_remove", args=[s, ref.pk]), {}),
    ]


@pytest.mark.parametrize("htmx", [False, True])
def test_an_outsider_gets_404_on_every_project_and_builder_url(client, outsider, draft, htmx):
    client.force_login(outsider)
    headers = HTMX if htmx else {}
    for method, url, data in _urls_for(draft):
        response = getattr(client, method)(url, data, **headers)
        assert response.status_code == 404, (method, url, response.status_code)
    draft.refresh_from_db()
    assert draft.title == "On bike lanes"
    assert draft.project.name == "Essays" and draft.project.archived_at is None
    assert Agent.objects.filter(session=draft).count() == 2
    assert draft.references.count() == 1
    assert not WritingSession.objects.filter(project__owner=outsider).exists()


def test_an_outsider_cannot_delete_another_users_personal_preset(client, outsider, owner, draft):
    from orchestration.presets import save_team_as_preset

    preset = save_team_as_preset(session=draft, user=owner, name="Owner team")
    client.force_login(outsider)
    client.post(reverse("preset_delete", args=[preset.pk]))
    assert type(preset).objects.filter(pk=preset.pk).exists()


def test_anonymous_visitors_are_sent_to_log_in(client, draft):
    response = client.get(reverse("session_edit", args=[draft.pk]))
    assert response.status_code == 302 and "login" in response.url
