"""Housekeeping in real Chromium: export buttons without a document, search, and deleting a session.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_housekeeping.py
"""

from __future__ import annotations

import re

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"


def test_exports_are_disabled_without_a_document_then_search_and_delete(page, live_app, login):
    from playwright.sync_api import expect

    from orchestration.models import Project, Status, WritingSession

    owner = make_user("tidy@example.com", password=PASSWORD)
    project = Project.objects.create(owner=owner, name="Birds")
    empty = WritingSession.objects.create(project=project, title="Heron field notes", brief="b", status=Status.STOPPED)
    running = WritingSession.objects.create(project=project, title="Heron census", brief="b", status=Status.RUNNING)
    login(page, live_app, "tidy@example.com", PASSWORD)

    # No document: the export buttons are disabled and say why.
    page.goto(f"{live_app.url}/sessions/{empty.pk}/document/")
    for fmt in ("md", "html", "docx"):
        expect(page.get_by_test_id(f"export-{fmt}")).to_be_disabled()
    expect(page.get_by_test_id("export-reason")).to_contain_text("once there is a document")

    # Search from the navigation finds both sessions by a word of their title, as you type.
    page.get_by_role("link", name="Sessions").click()
    # Type only once the new page has loaded: before htmx has bound the form, typing searches nothing.
    page.wait_for_url(re.compile(r"/sessions/$"))
    page.wait_for_load_state("load")
    page.get_by_test_id("session-q").fill("heron")
    expect(page.get_by_test_id("search-result")).to_have_count(2)
    page.get_by_test_id("session-q").fill("heron census")
    expect(page.get_by_test_id("search-result")).to_have_count(1)

    # A running session cannot be deleted.
    page.get_by_test_id("delete-session").click()
    expect(page.get_by_test_id("delete-refused")).to_be_visible()
    expect(page.get_by_test_id("confirm-delete")).to_have_count(0)

    # A stopped one can, after confirming.
    page.goto(f"{live_app.url}/sessions/?q=field+notes")
    page.get_by_test_id("delete-session").click()
    page.get_by_test_id("confirm-delete").click()  # the checkbox is required: nothing is sent yet
    assert re.search(r"/sessions/\d+/delete/$", page.url)
    page.get_by_test_id("confirm-checkbox").check()
    page.get_by_test_id("confirm-delete").click()
    page.wait_for_url(re.compile(rf".*/projects/{project.pk}/$"))
    expect(page.locator(".flash-success")).to_contain_text("Deleted “Heron field notes”")
    assert not WritingSession.objects.filter(pk=empty.pk).exists()
    assert WritingSession.objects.filter(pk=running.pk).exists()


def test_staff_watch_someone_elses_session_read_only(page, open_page, live_app, login):
    from playwright.sync_api import expect

    from orchestration.models import Project, Status, WritingSession

    owner = make_user("writer@example.com", password=PASSWORD)
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=owner, name="Birds"),
        title="Heron notes",
        brief="b",
        document="# Herons\n\nThey stand still.",
        status=Status.PAUSED,
    )
    make_user("ops@example.com", password=PASSWORD, is_staff=True)
    login(page, live_app, "ops@example.com", PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/")
    expect(page.get_by_test_id("staff-view")).to_contain_text("read-only")
    expect(page.get_by_test_id("resume")).to_have_count(0)
    expect(page.get_by_test_id("stop")).to_have_count(0)
    expect(page.get_by_test_id("human-edit-form")).to_have_count(0)
    expect(page.get_by_test_id("document-current")).to_contain_text("They stand still.")
    page.wait_for_function("() => document.getElementById('live-session').dataset.connected === 'true'")

    # Staff may stop it from here (after confirming); the owner then reads who did it.
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("staff-stop").click()
    expect(page.get_by_test_id("session-controls")).to_contain_text("owner sees that Atelier staff did it")
    expect(page.get_by_test_id("staff-stop")).to_have_count(0)
    session.refresh_from_db()
    assert session.status == Status.STOPPED

    # The owner, in their own browser (clearing this page's cookies instead raced the staff page's
    # in-flight requests for a fresh CSRF cookie and failed the login with a 403).
    owner_page = open_page()
    login(owner_page, live_app, "writer@example.com", PASSWORD)
    owner_page.goto(f"{live_app.url}/sessions/{session.pk}/")
    expect(owner_page.locator("#live-session")).to_contain_text("Stopped by Atelier staff")
    expect(owner_page.locator("#live-session")).not_to_contain_text("Stopped by you")
