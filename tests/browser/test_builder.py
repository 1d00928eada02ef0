"""The builder in real Chromium against the real ASGI server: build a team, edit it, save a draft.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_builder.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import make_user
from tests.studio_fixtures import catalogue_model

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def studio_user(live_app):
    from billing import services
    from orchestration.presets import seed_presets

    # A transactional test may start after another one flushed the seeded rows: make sure they exist.
    catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    seed_presets()
    user = make_user("builder@example.com", password=PASSWORD)
    account = services.get_account(user)
    account.plan = "starter"  # room for a third agent
    account.save()
    return user


def _agent_titles(page) -> list[str]:
    return page.locator("[data-testid=agent-card] .agent-title").all_inner_texts()


def test_build_a_session_from_the_preset_and_save_a_draft(page, live_app, studio_user, login):
    from orchestration.models import WritingSession

    base = live_app.url
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, live_app, "builder@example.com", PASSWORD)

    # A project, then a session from the shipped preset.
    page.goto(base + "/projects/new/")
    page.fill("input[name=name]", "Essays")
    page.locator("form button[type=submit]", has_text="Create project").click()
    page.get_by_role("link", name="New session").first.click()
    page.fill("input[name=title]", "Bike lanes")
    page.select_option("select[name=preset]", label="Academic writer + critical editor")
    page.get_by_test_id("create-session").click()
    page.wait_for_url(re.compile(r".*/sessions/\d+/edit/$"))
    assert _agent_titles(page) == ["Academic writer", "Critical editor"]
    estimate = page.get_by_test_id("estimate")
    assert re.search(r"\d+–\d+ credits", estimate.inner_text())

    # Add an agent (htmx, no reload), move it up, then remove it.
    marker = page.evaluate("() => (window.__builderMarker = Math.random())")
    page.get_by_test_id("add-agent").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=agent-card]').length === 3")
    assert _agent_titles(page) == ["Academic writer", "Critical editor", "Agent 3"]
    # The re-rendered team still offers the presets.
    assert "Academic writer + critical editor" in page.inner_text("#preset-select")
    page.locator("[data-testid=agent-card]").nth(2).get_by_test_id("agent-up").click()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=agent-card] .agent-title')[1].textContent === 'Agent 3'"
    )
    assert _agent_titles(page) == ["Academic writer", "Agent 3", "Critical editor"]
    page.locator("[data-testid=agent-card]").nth(1).get_by_test_id("agent-remove").click()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=agent-card]').length === 2")
    assert _agent_titles(page) == ["Academic writer", "Critical editor"]

    # An invalid temperature shows an inline error and keeps the typed value.
    card = page.locator("[data-testid=agent-card]").first
    card.locator("input[name$=-temperature]").fill("5")
    card.locator("input[name$=-temperature]").dispatch_event("change")
    page.wait_for_selector("[data-testid=agent-card] .errorlist")
    assert "less than or equal to 2" in page.locator("[data-testid=agent-card]").first.inner_text()
    page.locator("[data-testid=agent-card]").first.locator("input[name$=-temperature]").fill("0.4")
    page.locator("[data-testid=agent-card]").first.locator("input[name$=-temperature]").dispatch_event("change")
    page.wait_for_function("() => !document.querySelector('[data-testid=agent-card] .errorlist')")

    # Termination settings, then Save draft.
    page.fill("#id_brief", "Argue for protected bike lanes in 600 words.")
    page.fill("#id_max_rounds", "3")
    page.fill("#id_score_threshold", "8")
    page.select_option("#id_threshold_agent", label="Critical editor")
    page.fill("#id_credit_budget", "400")
    page.get_by_test_id("save-draft").click()
    page.wait_for_function("() => document.getElementById('save-status').textContent.includes('Draft saved')")
    assert re.search(r"\d+–\d+ credits", page.get_by_test_id("estimate").inner_text())
    # Everything above happened without a full page load.
    assert page.evaluate("() => window.__builderMarker") == marker

    session = WritingSession.objects.get(title="Bike lanes")
    assert (session.max_rounds, session.score_threshold, session.credit_budget) == (3, 8.0, 400)
    assert session.threshold_agent.name == "Critical editor"
    assert [a.name for a in session.agents.order_by("order")] == ["Academic writer", "Critical editor"]
    assert session.agents.get(name="Academic writer").temperature == 0.4

    # Screenshots for the README: desktop, phone and dark. (Full-page screenshots resize the page and
    # leave style="" on textareas, so they come last, after every swap.)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "builder.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.screenshot(path=str(SCREENSHOTS / "builder-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="dark")
    page.reload()
    page.screenshot(path=str(SCREENSHOTS / "builder-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.goto(base + "/dashboard/")
    assert "Bike lanes" in page.inner_text("#recent-sessions")
    page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
