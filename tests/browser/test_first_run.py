"""A newcomer's first run in real Chromium: the dashboard's demo button, one screen with Start, the live page.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_first_run.py
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"


@pytest.fixture
def newcomer(live_app):
    from orchestration.catalogue import seed_catalogue
    from orchestration.presets import seed_presets

    seed_catalogue()  # a transactional test may start after another one flushed the seeded rows
    seed_presets()
    return make_user("newcomer@example.com", password=PASSWORD)


def _in_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"]


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}])
def test_try_the_demo_team_shows_start_on_one_screen_and_starts(page, live_app, newcomer, login, viewport):
    from playwright.sync_api import expect

    from orchestration.models import Status, WritingSession

    page.set_viewport_size(viewport)
    login(page, live_app, "newcomer@example.com", PASSWORD)
    page.goto(live_app.url + "/dashboard/")
    expect(page.get_by_test_id("demo-cost")).to_contain_text("credits")
    expect(page.get_by_test_id("empty-dashboard")).not_to_contain_text("costs nothing")
    page.get_by_test_id("try-demo").click()
    page.wait_for_url(re.compile(r".*/sessions/\d+/demo/$"))

    start = page.get_by_test_id("demo-start")
    expect(start).to_be_visible()
    assert page.evaluate("() => window.scrollY") == 0
    assert _in_viewport(page, start), "Start must be visible without scrolling"
    expect(page.get_by_test_id("demo-agent")).to_have_count(2)
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll

    start.click()
    page.wait_for_url(re.compile(r".*/sessions/\d+/$"))
    expect(page.locator("#live-session")).to_be_visible()
    session = WritingSession.objects.get(project__owner=newcomer)
    assert session.status != Status.DRAFT


@pytest.fixture
def app_without_openai(transactional_db):
    """Daphne with no OpenAI key: the builder must say its models are unavailable, in users' words."""
    from tests.live import start_app

    app = start_app(env={"OPENAI_API_KEY": ""})
    yield app
    app.stop()


def test_models_without_a_connected_provider_are_shown_unavailable_with_a_reason(page, app_without_openai, login):
    from playwright.sync_api import expect

    make_user("builder@example.com", password=PASSWORD)
    login(page, app_without_openai, "builder@example.com", PASSWORD)
    page.goto(app_without_openai.url + "/dashboard/")
    page.get_by_test_id("try-demo").click()
    page.get_by_test_id("demo-customize").click(no_wait_after=True)
    page.wait_for_url(re.compile(r".*/sessions/\d+/edit/$"), timeout=60_000)  # the builder is a heavy page

    select = page.locator("[data-testid=agent-card] select[name$='-model']").first
    expect(select).to_be_visible()
    openai = select.locator("option", has_text="unavailable: OpenAI is not connected on this server")
    assert openai.count() >= 1
    assert all(openai.nth(i).is_disabled() for i in range(openai.count()))
    demo = select.locator("option", has_text="Demo")
    assert demo.count() >= 1 and not demo.first.is_disabled()
    assert not re.search(r"[A-Z]+_API_KEY", page.content())
