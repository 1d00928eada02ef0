"""The live page's header and the studio's layout tell the truth (issue 14, items 13 and 14).

Sessions are put in the database as a run would leave them and the real daphne server renders them
in Chromium; no worker runs (nothing here needs one, and a watchdog must not touch the fixtures).

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_live_header_layout.py
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import make_user
from tests.studio_fixtures import catalogue_model

PASSWORD = "correct horse battery staple"
EMAIL = "header@example.com"
LONG = "W" * 80
RTL_PROJECT = "مشروع الكتابة"


pytestmark = pytest.mark.live_app(worker=False)


@pytest.fixture
def owner(live_app):
    return make_user(EMAIL, password=PASSWORD)


def make_session(owner, *, title="Bike lanes", project="Essays", status="completed", **fields):
    from orchestration.models import Agent, Project, WritingSession

    model = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    project_obj, _ = Project.objects.get_or_create(owner=owner, name=project)
    session = WritingSession.objects.create(
        project=project_obj, title=title, brief="Argue for bike lanes.", status=status, max_rounds=3, **fields
    )
    for order, name in enumerate(["Writer", "Editor"]):
        Agent.objects.create(session=session, order=order, name=name, model=model, role_prompt="Write.")
    return session


def add_turn(session, *, round_number, agent_name, start, seconds, overall=None, status="completed", text="Text."):
    from orchestration.models import Turn

    agent = session.agents.get(name=agent_name)
    turn = Turn.objects.create(
        session=session,
        round=round_number,
        agent=agent,
        agent_name=agent_name,
        status=status,
        model_used="demo-writer",
        output_text=text,
        overall_score=overall,
        scores={"Clarity": overall} if overall is not None else {},
        finished_at=None if status == "streaming" else start + dt.timedelta(seconds=seconds),
    )
    # started_at is auto_now_add: set the time the run would have recorded.
    Turn.objects.filter(pk=turn.pk).update(started_at=start)
    return turn


def open_page(page, live_app, login, path):
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(live_app.url + path)


def test_equal_scores_draw_every_line_and_the_clock_counts_only_active_time(page, live_app, login, owner):
    base = timezone.now() - dt.timedelta(hours=2)
    session = make_session(owner, started_at=base, finished_at=base + dt.timedelta(hours=1))
    # Two turns per round, equal scores, with a long pause between the rounds.
    add_turn(session, round_number=1, agent_name="Writer", start=base, seconds=30, overall=7.0)
    add_turn(
        session, round_number=1, agent_name="Editor", start=base + dt.timedelta(seconds=40), seconds=30, overall=7.0
    )
    later = base + dt.timedelta(minutes=50)
    add_turn(session, round_number=2, agent_name="Writer", start=later, seconds=20, overall=8.0)
    add_turn(
        session, round_number=2, agent_name="Editor", start=later + dt.timedelta(seconds=20), seconds=25, overall=8.0
    )
    open_page(page, live_app, login, f"/sessions/{session.pk}/")

    lines = page.locator("#score-chart polyline").evaluate_all("lines => lines.map((l) => l.getAttribute('points'))")
    assert len(lines) == 2 and lines[0] != lines[1], lines
    expect(page.locator("#score-chart .chart-legend li")).to_have_count(2)

    # 30 + 30 + 20 + 25 seconds of writing; not the hour the session was open, not "1 hour".
    clock = page.get_by_test_id("active-time")
    expect(clock).to_have_text("1m 45s")
    page.wait_for_timeout(1500)  # the clock must not tick for a finished session
    expect(clock).to_have_text("1m 45s")


def test_a_streaming_turn_shows_in_the_totals_and_runs_the_clock(page, live_app, login, owner):
    from orchestration import events as ev

    session = make_session(owner, status="running", started_at=timezone.now())
    turn = add_turn(
        session, round_number=1, agent_name="Writer", start=timezone.now() - dt.timedelta(seconds=5), seconds=0,
        status="streaming",
    )  # fmt: skip
    from billing.services import grant_credits, reserve_credits
    from orchestration.models import turn_reservation_key

    grant_credits(user=owner, amount=100, key="test:grant", description="test credits")
    reserve_credits(user=owner, amount=12, key=turn_reservation_key(turn.pk), session_id=session.pk, turn_id=turn.pk)
    ev.append_events(
        session_id=session.pk,
        events=[
            ev.NewEvent("turn_started", {"round": 1}, turn.pk),
            ev.NewEvent("chunk", {"text": "word " * 200}, turn.pk),
        ],
        broadcast=False,  # no one listens yet; the page renders them from the database
    )
    open_page(page, live_app, login, f"/sessions/{session.pk}/")

    tokens = page.get_by_test_id("tokens-live")
    expect(tokens).to_be_visible()
    expect(tokens).to_contain_text("+≈250 being written")
    # Credits are charged when the turn ends; meanwhile the page says how many it holds, never a bare 0.
    expect(page.get_by_test_id("credits-live")).to_be_visible()
    expect(page.get_by_test_id("credits-live")).to_contain_text("+ up to 12 held for what is being written")
    clock = page.get_by_test_id("active-time")
    first = clock.inner_text()
    page.wait_for_function(f"() => document.querySelector('[data-testid=active-time]').textContent !== '{first}'")
    page.goto(live_app.url + "/dashboard/")  # leave before the server stops (no reconnect noise)


def test_the_stop_banner_says_things_once_and_resume_without_credits_says_why(page, live_app, login, owner):
    from billing.models import CreditAccount
    from orchestration.models import StopReason

    paused = make_session(
        owner, title="Paused one", status="paused", stop_reason=StopReason.USER_PAUSED, stop_detail="Paused by you."
    )
    open_page(page, live_app, login, f"/sessions/{paused.pk}/")
    banner = page.get_by_test_id("stop-banner")
    expect(banner).to_contain_text("Paused by you")
    assert banner.inner_text().count("Paused by you") == 1, banner.inner_text()
    expect(page.get_by_test_id("resume")).to_be_enabled()

    starved = make_session(
        owner,
        title="Starved",
        status="paused",
        stop_reason=StopReason.OUT_OF_CREDITS,
        stop_detail="Out of credits. It carries on by itself within a minute of credits arriving.",
    )
    from billing.services import get_account

    get_account(owner)
    CreditAccount.objects.filter(user=owner).update(balance=0)
    page.goto(f"{live_app.url}/sessions/{starved.pk}/")
    banner = page.get_by_test_id("stop-banner")
    assert banner.inner_text().count("Out of credits") == 1, banner.inner_text()
    expect(page.get_by_test_id("resume")).to_be_disabled()
    reason = page.get_by_test_id("resume-blocked")
    expect(reason).to_contain_text("no credits left")
    expect(reason.get_by_role("link", name="Get more credits")).to_be_visible()


def test_user_text_wraps_and_isolates_and_tables_fit(page, live_app, login, owner):
    from orchestration.models import DocumentVersion

    session = make_session(owner, title=LONG, project=RTL_PROJECT, document="Text v2")
    for number in (1, 2):
        DocumentVersion.objects.create(
            session=session, number=number, content=f"Text v{number}", note="Round 1 · Writer"
        )
    open_page(page, live_app, login, "/dashboard/")

    # The dashboard's meta line shows the right-to-left project name isolated from the time after it.
    meta = page.get_by_test_id("recent-meta").first
    expect(meta.locator("bdi")).to_have_text(RTL_PROJECT)
    assert meta.inner_text().endswith("ago")
    expect(page.get_by_test_id("recent-session").first.locator("a bdi")).to_have_text(LONG)

    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        for path in ("/dashboard/", f"/sessions/{session.pk}/", f"/projects/{session.project_id}/"):
            page.goto(live_app.url + path)
            scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
            wide = page.evaluate(
                "(w) => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)"
                ".slice(0, 6).map(e => e.tagName + '.' + e.className)",
                width,
            )
            assert scroll_width <= width, f"{path} is {scroll_width}px wide at {width}px: {wide}"

    # The builder: a long agent name stays in the main column, clear of the sidebar.
    page.set_viewport_size({"width": 1280, "height": 900})
    draft = make_session(owner, title="Draft", status="draft")
    draft.agents.filter(name="Writer").update(name=LONG)
    page.goto(f"{live_app.url}/sessions/{draft.pk}/edit/")
    name = page.locator("[data-testid=agent-card] .agent-title").first.bounding_box()
    main = page.locator(".builder-main").bounding_box()
    assert name["x"] + name["width"] <= main["x"] + main["width"] + 1, "the agent name runs into the sidebar"

    # The live page: a long title stays in its header; the versions table's time is visible.
    page.goto(f"{live_app.url}/sessions/{session.pk}/")
    title = page.locator(".session-title").bounding_box()
    header = page.locator("#session-header").bounding_box()
    assert title["x"] + title["width"] <= header["x"] + header["width"] + 1
    wrap = page.locator(".live-document .table-wrap").bounding_box()
    for time in page.locator(".version-table time").all():
        box = time.bounding_box()
        assert box["x"] + box["width"] <= wrap["x"] + wrap["width"] + 1, "the time column is cut off"


def test_the_login_and_password_pages_offer_a_password_reset_once(page, live_app, login, owner):
    page.goto(live_app.url + "/accounts/login/")
    expect(page.get_by_role("link", name="Forgot your password?")).to_have_count(1)
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(live_app.url + "/accounts/password/change/")
    expect(page.get_by_role("link", name="Forgot your")).to_have_count(1)
