"""The research -> plan -> build -> review pipeline in real Chromium, against real daphne and a real django-q2
worker on the demo provider: the phase strip walks the stages live, the research card's citations are
links, and following one lands on the cited passage, shown on the page. Run separately:
DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_pipeline_flow.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser.conftest import element_screenshot
from tests.conftest import make_user
from tests.live import preset_session

PASSWORD = "correct horse battery staple"
EMAIL = "pipeline-watcher@example.com"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

NOTES = """# Shade

Street trees cool the pavement by several degrees in summer, which cities need.

## Storm water

Roots and crowns slow storm water, so drains in cities overflow less often during heavy rain.

## Costs

Watering young street trees for their first three years is the largest cost for cities.
"""


# Daphne and a worker whose demo model writes ~60 tokens a second, so each stage lasts a few seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="60")


def pipeline_draft(user):
    return preset_session(
        user,
        "researched-article",
        project="Trees",
        title="Why cities need street trees",
        brief="An article on why cities need street trees: shade, storm water and what they cost.",
        references=[("Tree notes", NOTES, "trees.md")],
    )


def test_the_pipeline_shows_its_stages_live_and_citations_open_their_passages(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Passage, Status, Turn

    user = make_user(EMAIL, password=PASSWORD)
    session = pipeline_draft(user)
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/edit/")
    expect(page.get_by_test_id("pipeline-settings")).to_be_visible()
    page.get_by_test_id("start-session").click()
    expect(page).to_have_url(re.compile(rf".*/sessions/{session.pk}/$"), timeout=15_000)

    # The phase strip names the four stages and moves through them while the run streams.
    phases = page.get_by_test_id("phases")
    expect(phases).to_contain_text("Research", timeout=30_000)
    expect(phases).to_contain_text("Plan")
    expect(phases).to_contain_text("Build")
    expect(phases).to_contain_text("Review")
    expect(page.locator("[data-phase=researching][data-state=done]")).to_have_count(1, timeout=60_000)
    expect(page.locator("[data-phase=planning][data-state=done]")).to_have_count(1, timeout=60_000)

    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=180_000)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED, session.stop_detail

    research = Turn.objects.get(session=session, slot="research", status="completed")
    card = page.locator(f"#turn-{research.pk}")
    findings = card.get_by_test_id("finding")
    expect(findings).to_have_count(len(research.result["findings"]))
    link = card.get_by_test_id("citation").first
    href = link.get_attribute("href")
    passage = Passage.objects.get(pk=int(href.removeprefix("#passage-")), session=session)
    link.click()
    expect(page).to_have_url(re.compile(rf".*{href}$"))
    target = page.locator(href)
    expect(target).to_be_in_viewport()
    expect(target.get_by_test_id("source-text")).to_contain_text(passage.text.splitlines()[-1][:60])

    # The review's edits say which applied; the report totals the stages.
    expect(page.get_by_test_id("review-edit").first).to_be_visible()
    expect(page.get_by_test_id("stage-row")).to_have_count(Turn.objects.filter(session=session).count())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    element_screenshot(page.get_by_test_id("pipeline-report"), str(SCREENSHOTS / "pipeline-report.png"))
