"""The live page never stays stale: it re-checks when it hears nothing, and says when no worker drives the run.

Real Chromium, real daphne, a real django-q2 worker on the demo provider. Messages from the server
are dropped on their way to the page (Playwright's WebSocket routing), as a full channel drops them.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_live_recheck.py
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_user
from tests.live import start_worker, wait_for

PASSWORD = "correct horse battery staple"
EMAIL = "watcher@example.com"


pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="30")


def demo_session(owner):
    from orchestration.models import Agent, Criterion, LLMModel, Project, WritingSession

    demo = LLMModel.objects.get(provider="demo")
    project = Project.objects.create(owner=owner, name="Watching")
    session = WritingSession.objects.create(project=project, title="Dropped messages", brief="Trees", max_rounds=1)
    for order, name in enumerate(["Writer", "Editor"]):
        agent = Agent.objects.create(
            session=session, order=order, name=name, role="writer", model=demo, role_prompt="Write well."
        )
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def start_run(session, owner) -> None:
    """services.start_session from another thread: sync Playwright keeps an event loop in this one."""
    import threading

    from orchestration import services

    errors: list[BaseException] = []

    def run() -> None:
        try:
            services.start_session(session=session, user=owner)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class Dropper:
    """Sits between the page and the server; while `dropping`, server messages never reach the page."""

    def __init__(self) -> None:
        self.dropping = False
        self.dropped = 0

    def route(self, ws) -> None:
        server = ws.connect_to_server()

        def to_page(message) -> None:
            if self.dropping:
                self.dropped += 1
            else:
                ws.send(message)

        server.on_message(to_page)


def open_live_page(page, live_app, login, session, dropper: Dropper) -> None:
    page.route_web_socket(re.compile(r"/ws/sessions/"), dropper.route)
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/")
    page.wait_for_function("() => document.getElementById('live-session').dataset.connected === 'true'")


def test_a_page_whose_last_messages_were_dropped_still_learns_the_run_ended(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import SessionEvent, Status, WritingSession

    owner = make_user(EMAIL, password=PASSWORD)
    session = demo_session(owner)
    start_run(session, owner)
    dropper = Dropper()
    open_live_page(page, live_app, login, session, dropper)
    page.wait_for_function("() => document.querySelector('[data-testid=turn][data-status=streaming]')")

    # From here on the channel loses everything the server pushes: the rest of the run, its end.
    dropper.dropping = True
    seen = int(page.evaluate("() => document.getElementById('live-session').dataset.lastSeq"))
    wait_for(
        lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED, timeout=90, message="the run"
    )
    page.wait_for_timeout(500)  # pump the route: the final pushes arrive and are dropped
    assert dropper.dropped > 0
    assert SessionEvent.objects.filter(session=session).count() > seen
    expect(page.get_by_test_id("status-badge")).not_to_have_text("Completed")  # the page did miss the end

    # No later message will ever come. The page notices the silence, asks, and shows the end.
    dropper.dropping = False
    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=15_000)
    last_seq = WritingSession.objects.get(pk=session.pk).last_seq
    page.wait_for_function(f"() => document.getElementById('live-session').dataset.lastSeq === '{last_seq}'")
    expect(page.locator("[data-testid=turn][data-status=streaming]")).to_have_count(0)
    expect(page.get_by_test_id("connection-status")).to_have_text("")


def test_the_page_says_when_no_worker_drives_the_run_and_recovers_when_one_does(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Status, WritingSession

    owner = make_user(EMAIL, password=PASSWORD)
    session = demo_session(owner)
    start_run(session, owner)
    open_live_page(page, live_app, login, session, Dropper())
    page.wait_for_function("() => document.querySelector('[data-testid=turn][data-status=streaming]')")
    hint = page.get_by_test_id("connection-status")
    expect(hint).to_have_text("")

    live_app.worker.kill_group()  # the worker dies mid-turn: the card would sit on "Streaming"
    expect(hint).to_have_text("Reconnecting to a worker…", timeout=20_000)

    live_app.worker = start_worker(DEMO_TOKENS_PER_SECOND="400")
    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=60_000)
    expect(hint).to_have_text("")
    assert WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED
