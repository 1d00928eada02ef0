"""The planned flow in real Chromium, against real daphne and a real django-q2 worker on the demo provider.

The plan shows as ordered waves before anything runs (approve-plan pause), the approval starts the tasks,
the three section tasks of wave 2 stream side by side, and the run ends with its summary. Run separately:
DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_planned_flow.py
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_user
from tests.live import preset_session

# Daphne and a worker whose demo model writes ~40 tokens a second, so a task lasts a few seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="40")

PASSWORD = "correct horse battery staple"
EMAIL = "planner-watcher@example.com"

STREAMS_JS = """() => Array.from(
  document.querySelectorAll('[data-testid=parallel-group] [data-testid=turn][data-status=streaming]')
).map((card) => ({id: card.dataset.turnId, text: card.querySelector('[data-testid=turn-body]').textContent}))"""


def planned_draft(user):
    from orchestration.models import WritingSession

    session = preset_session(
        user,
        "planned-report",
        project="Reports",
        title="Street trees report",
        brief="Write a short report arguing that cities should plant more street trees.",
    )
    WritingSession.objects.filter(pk=session.pk).update(flow_config={**session.flow_config, "approve_plan": True})
    return session


def test_the_plan_shows_before_execution_and_the_tasks_stream_side_by_side(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Status, StopReason

    user = make_user(EMAIL, password=PASSWORD)
    session = planned_draft(user)
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/edit/")
    expect(page.get_by_test_id("planned-settings")).to_be_visible()
    page.get_by_test_id("start-session").click()
    expect(page).to_have_url(re.compile(rf".*/sessions/{session.pk}/$"), timeout=15_000)

    # The plan: three waves in order, before any task has run, and the approval button.
    panel = page.get_by_test_id("plan-panel")
    expect(panel.get_by_test_id("plan-awaiting-approval")).to_be_visible(timeout=60_000)
    waves = panel.get_by_test_id("plan-wave")
    expect(waves).to_have_count(3)
    expect(waves.nth(0)).to_contain_text("Key facts on")
    expect(waves.nth(1).get_by_test_id("plan-task")).to_have_count(3)
    expect(waves.nth(1)).to_contain_text("3 tasks in parallel")
    expect(waves.nth(2)).to_contain_text("Conclusion")
    expect(panel.locator("[data-testid=plan-task][data-status=waiting]")).to_have_count(4)
    session.refresh_from_db()
    assert session.status == Status.PAUSED and session.stop_reason == StopReason.AWAITING_APPROVAL

    # Phones read the plan as a list: nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 812})
    overflow = panel.evaluate("el => el.scrollWidth - el.clientWidth")
    assert overflow <= 1, f"the plan overflows a phone screen by {overflow}px"
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_test_id("approve-plan").click()
    # Wave 2's three sections stream at once, side by side, each with its own growing text.
    page.wait_for_function(
        f"() => {{ const s = ({STREAMS_JS})(); return s.length >= 3 && s.every((c) => c.text.trim().length > 10); }}",
        timeout=90_000,
    )
    tops = page.locator("[data-testid=parallel-group] [data-testid=turn][data-status=streaming]").evaluate_all(
        "cards => cards.map((c) => Math.round(c.getBoundingClientRect().top))"
    )
    assert len(set(tops)) < len(tops), f"the parallel tasks are not side by side: {tops}"
    expect(panel.locator("[data-testid=plan-task][data-status=running]")).to_have_count(3)
    expect(panel.get_by_test_id("plan-route").first).to_contain_text("Model:")

    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=180_000)
    expect(panel.get_by_test_id("plan-summary")).to_contain_text("5 of 5 tasks done", timeout=15_000)
    expect(panel.locator("[data-testid=plan-task][data-status=passed]")).to_have_count(5)
    session.refresh_from_db()
    assert session.stop_reason == StopReason.PLAN_DONE
    assert "## Conclusion" in session.document
    page.screenshot(path="docs/screenshots/planned-flow.png", full_page=True)
