"""Projects through the API: the same rules and quotas as the pages."""

from __future__ import annotations

import pytest

from orchestration.models import Project, Status, WritingSession
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_create_list_read_update_archive_and_delete(api, owner):
    created = api.post("projects", {"name": "Essays", "description": "Long form"})
    assert created.status_code == 201
    pid = created.json()["id"]
    assert api.get(f"projects/{pid}").json()["name"] == "Essays"
    listing = api.get("projects").json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == pid and listing["next_offset"] is None
    renamed = api.patch(f"projects/{pid}", {"name": "Essays 2"})
    assert renamed.json()["name"] == "Essays 2" and renamed.json()["description"] == "Long form"
    assert api.patch(f"projects/{pid}", {"archived": True}).json()["archived"] is True
    assert api.get("projects").json()["count"] == 0
    assert api.get("projects", archived="true").json()["count"] == 1
    assert api.delete(f"projects/{pid}").status_code == 204
    assert not Project.objects.filter(pk=pid).exists()


def test_pagination_pages_through_everything(api, owner):
    for i in range(5):
        Project.objects.create(owner=owner, name=f"P{i}")
    first = api.get("projects", limit=2).json()
    assert first["count"] == 5 and len(first["items"]) == 2 and first["next_offset"] == 2
    last = api.get("projects", limit=2, offset=4).json()
    assert len(last["items"]) == 1 and last["next_offset"] is None
    assert_error(api.get("projects", limit=0), 422)
    assert_error(api.get("projects", limit="many"), 422)


def test_another_users_project_is_404_for_every_method(api, outsider_api, owner):
    pid = api.post("projects", {"name": "Mine"}).json()["id"]
    assert_error(outsider_api.get(f"projects/{pid}"), 404)
    assert_error(outsider_api.patch(f"projects/{pid}", {"name": "Theirs"}), 404)
    assert_error(outsider_api.delete(f"projects/{pid}"), 404)
    assert outsider_api.get("projects").json()["count"] == 0
    assert Project.objects.get(pk=pid).name == "Mine"


def test_a_project_with_a_running_session_cannot_be_deleted(api, owner):
    project = Project.objects.create(owner=owner, name="Busy")
    WritingSession.objects.create(project=project, title="Run", brief="b", status=Status.RUNNING)
    body = assert_error(api.delete(f"projects/{project.pk}"), 409, "conflict")
    assert "running" in body["message"]
    assert Project.objects.filter(pk=project.pk).exists()


def test_the_plan_project_quota_is_a_402_with_the_upgrade_reason(api, owner):
    from billing.plans import PLANS

    Project.objects.bulk_create(Project(owner=owner, name=f"P{i}") for i in range(PLANS["free"].max_projects))
    body = assert_error(api.post("projects", {"name": "One too many"}), 402, "plan_limit")
    assert "Upgrade" in body["message"] and body["upgrade_url"]
