"""Parallel agents in real Chromium, against real daphne and a real django-q2 worker on the demo provider.

A roundtable's three critics stream side by side, a reload mid-round restores all three streams, and
the convergence report renders and exports. Run separately:
DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_parallel_flows.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import make_user
from tests.live import preset_session

PASSWORD = "correct horse battery staple"
EMAIL = "critic-watcher@example.com"

STREAMS_JS = """() => Array.from(
  document.querySelectorAll('[data-testid=parallel-group] [data-testid=turn][data-status=streaming]')
).map((card) => ({id: card.dataset.turnId, text: card.querySelector('[data-testid=turn-body]').textContent}))"""


# Daphne and a worker whose demo model writes ~40 tokens a second, so a critique lasts a few seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="40")


def squash(text: str) -> str:
    return " ".join(text.split())


def roundtable_draft(user):
    return preset_session(
        user,
        "product-roundtable",
        project="Specs",
        title="Checkout redesign",
        brief="A one-page spec for a faster checkout.",
        document="# Checkout redesign\n\nWe will cut checkout to one page. Payment stays as it is.\n",
    )


def test_three_critics_stream_side_by_side_survive_a_reload_and_the_report_exports(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.flows.structured import severity_counts
    from orchestration.models import Status, StopReason, Turn

    user = make_user(EMAIL, password=PASSWORD)
    session = roundtable_draft(user)
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/edit/")
    page.get_by_test_id("start-session").click()
    expect(page).to_have_url(re.compile(rf".*/sessions/{session.pk}/$"), timeout=15_000)

    # Three live streams at once, in one group of columns, each with its own text growing.
    page.wait_for_function(
        f"() => {{ const s = ({STREAMS_JS})(); return s.length === 3 && s.every((c) => c.text.trim().length > 20); }}",
        timeout=30_000,
    )
    streams = page.evaluate(STREAMS_JS)
    assert len({s["id"] for s in streams}) == 3
    tops = page.locator("[data-testid=parallel-group] [data-testid=turn]").evaluate_all(
        "cards => cards.map((c) => Math.round(c.getBoundingClientRect().top))"
    )
    assert len(set(tops)) == 1, f"the three critics are not side by side: {tops}"
    expect(page.get_by_test_id("phases")).to_contain_text("Reviewing (0 of 3 done)")

    # Reload mid-round: every stream comes back with what it had, once, and keeps growing.
    before = {s["id"]: squash(s["text"]) for s in page.evaluate(STREAMS_JS)}
    page.reload()
    page.wait_for_function("() => document.getElementById('live-session').dataset.connected === 'true'")
    for turn_id, old in before.items():
        after = squash(page.locator(f"#turn-{turn_id}-body").text_content())
        assert after.startswith(old), f"after reload the card lost text:\n{old!r}\n{after!r}"
        assert after.count(old) == 1
        assert page.locator(f"#turn-{turn_id}").count() == 1
    lengths = {turn_id: len(squash(page.locator(f"#turn-{turn_id}-body").text_content())) for turn_id in before}
    page.wait_for_function(
        "(lengths) => Object.entries(lengths).every(([id, n]) => {"
        "  const card = document.getElementById('turn-' + id);"
        "  const text = document.getElementById('turn-' + id + '-body').textContent.replace(/\\s+/g, ' ').trim();"
        "  return card.dataset.status !== 'streaming' || text.length > n + 10; })",
        arg=lengths,
        timeout=30_000,
    )
    group = page.locator("#round-1-reviewing [data-testid=turn]")
    expect(group).to_have_count(3)

    # Phones stack the columns.
    page.set_viewport_size({"width": 375, "height": 812})
    columns = page.locator("#round-1-reviewing .parallel-columns").evaluate(
        "el => getComputedStyle(el).gridTemplateColumns.split(' ').length"
    )
    assert columns == 1
    page.set_viewport_size({"width": 1280, "height": 900})

    # The run converges (the demo critics raise no high-severity issue in round 2) and the report renders.
    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=120_000)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED and session.stop_reason == StopReason.NO_HIGH_ISSUES
    report = page.get_by_test_id("convergence-report")
    expect(report.get_by_test_id("report-verdict")).to_contain_text("no high-severity issues left", timeout=15_000)
    expect(report.get_by_test_id("report-round")).to_have_count(2)
    # Round 1's high-severity count is what the critics' saved issues say (the demo raised at least one,
    # or the run would have converged in round 1).
    round_1_reviews = Turn.objects.filter(session=session, round=1, slot__startswith="review:").order_by("agent__order")
    round_1_high = severity_counts([i for t in round_1_reviews for i in (t.result or {}).get("issues", [])])["high"]
    assert round_1_high >= 1
    expect(report.get_by_test_id("report-high").first).to_have_text(str(round_1_high))

    # Each critique reads as issues with severities; the moderator's resolutions link back to them.
    first_review = round_1_reviews[0]
    raised = len(first_review.result["issues"])
    assert raised >= 1
    card = page.locator(f"#turn-{first_review.pk}")
    expect(card.get_by_test_id("issue")).to_have_count(raised)
    link = page.locator("[data-testid=decision-link]").first
    target = link.get_attribute("href")
    assert page.locator(target).count() == 1

    # A reload shows the same finished page; Export downloads the Markdown report.
    page.reload()
    expect(page.get_by_test_id("report-verdict")).to_contain_text("no high-severity issues left")
    with page.expect_download() as download_info:
        page.get_by_test_id("export-report").click()
    text = Path(download_info.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Convergence report: Checkout redesign")
    assert "## Round 1" in text and "## Round 2" in text and "| Engineering critic |" in text
