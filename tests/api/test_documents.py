"""Documents through the API on a session with versions: read, versions, one version, diffs, exports,
and the errors each answers for bad input."""

from __future__ import annotations

import pytest

from orchestration.models import Status, Turn, WritingSession
from orchestration.versions import record_version
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def written(project):
    session = WritingSession.objects.create(
        project=project, title="Essay", brief="b", status=Status.COMPLETED, document="Cities need bike lanes.\n"
    )
    record_version(session=session, content="Cities need lanes.\n", note="Starting document")
    turn = Turn.objects.create(session=session, round=1, agent_name="Editor", status=Turn.TurnStatus.COMPLETED)
    record_version(session=session, content="Cities need bike lanes.\n", turn=turn, note="Round 1")
    return session


def test_document_versions_and_one_version(api, written):
    document = api.get(f"sessions/{written.pk}/document").json()
    assert document == {
        "session_id": written.pk,
        "content": "Cities need bike lanes.\n",
        "characters": 24,
        "version": 2,
        "status": "completed",
    }
    versions = api.get(f"sessions/{written.pk}/versions").json()
    assert [v["number"] for v in versions["items"]] == [1, 2] and "content" not in versions["items"][0]
    assert versions["items"][1]["turn_id"] is not None and versions["items"][1]["note"] == "Round 1"
    assert api.get(f"sessions/{written.pk}/versions/1").json()["content"] == "Cities need lanes.\n"
    assert_error(api.get(f"sessions/{written.pk}/versions/9"), 404)


def test_diff_between_versions_and_its_errors(api, written):
    diff = api.get(f"sessions/{written.pk}/diff", from_version=1, to_version=2).json()
    assert "-Cities need lanes." in diff["unified"] and "+Cities need bike lanes." in diff["unified"]
    assert diff["stats"] and "<ins" in diff["html"]
    assert_error(api.get(f"sessions/{written.pk}/diff", from_version=1), 422)  # to_version missing
    assert_error(api.get(f"sessions/{written.pk}/diff", from_version=1, to_version="two"), 422)
    body = assert_error(api.get(f"sessions/{written.pk}/diff", from_version=1, to_version=7), 404)
    assert "version 7" in body["message"]


def test_exports_and_no_document_yet(api, written, project):
    html = api.get(f"sessions/{written.pk}/export", format="html")
    assert html.status_code == 200 and "default-src 'none'" in html["Content-Security-Policy"]
    assert "attachment" in html["Content-Disposition"] and "bike lanes" in html.content.decode()
    empty = WritingSession.objects.create(project=project, title="Empty", brief="b")
    assert_error(api.get(f"sessions/{empty.pk}/export", format="md"), 409, "no_document")


def test_usage_pages_through_the_ledger(api, owner):
    from billing.services import grant_credits

    for i in range(3):
        grant_credits(user=owner, amount=10, key=f"test:grant:{i}", description="grant")
    first = api.get("usage", limit=2).json()
    assert len(first["items"]) == 2 and first["next_offset"] == 2 and first["count"] >= 3
    assert first["items"][0]["amount"] == 10 and first["balance"] == 530
    assert_error(api.get("usage", limit=500), 422)
