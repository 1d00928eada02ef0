"""The live session page in real Chromium, against real daphne and a real django-q2 worker on the demo provider.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_live_session.py
"""

from __future__ import annotations

import html
import re

import pytest
from django.utils.html import strip_tags

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"
EMAIL = "writer@example.com"
TITLE = "Bike lanes, live"

# The card of the turn streaming right now, and its text; read in one go so status and text agree.
STREAMING_CARD_JS = """() => {
  const card = document.querySelector('[data-testid=turn][data-status=streaming]');
  if (!card) return null;
  return {
    id: card.dataset.turnId,
    badge: card.querySelector('[data-testid=turn-status]').textContent.trim(),
    text: card.querySelector('[data-testid=turn-body]').textContent,
  };
}"""


# Daphne and a worker whose demo model writes ~40 tokens a second, so one turn lasts a few seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="40")


def squash(text: str) -> str:
    return " ".join(text.split())


def expected_card_text(turn) -> str:
    """What a finished turn's card body says, from the database."""
    from orchestration.live import turn_body_html

    return squash(html.unescape(strip_tags(str(turn_body_html(turn)))))


def card_text(page, turn_id: int | str) -> str:
    return squash(page.locator(f"#turn-{turn_id}-body").text_content())


def streaming_card(page, *, min_chars: int = 0) -> dict:
    page.wait_for_function(
        f"() => {{ const c = ({STREAMING_CARD_JS})(); return c && c.text.trim().length > {min_chars}; }}",
        timeout=30_000,
    )
    return page.evaluate(STREAMING_CARD_JS)


def status_badge(page):
    return page.get_by_test_id("status-badge")


def test_watch_a_session_stream_pause_resume_reload_and_stop(live_app, page, login):
    # live_app before page: the page closes first, so no reconnect errors are logged while the server stops.
    from playwright.sync_api import expect

    from orchestration.models import Status, Turn, WritingSession

    make_user(EMAIL, password=PASSWORD)
    base = live_app.url
    login(page, live_app, EMAIL, PASSWORD)

    # Build the session in the builder from the shipped preset, starting from the dashboard.
    page.goto(base + "/dashboard/")
    page.get_by_role("link", name="create an empty project").click()
    page.fill("input[name=name]", "Essays")
    page.locator("form button[type=submit]", has_text="Create project").click()
    page.get_by_role("link", name="New session").first.click()
    page.fill("input[name=title]", TITLE)
    page.select_option("select[name=preset]", label="Academic writer + critical editor")
    page.get_by_test_id("create-session").click()
    page.wait_for_url(re.compile(r".*/sessions/\d+/edit/$"))
    page.fill("#id_brief", "Argue for protected bike lanes in a short essay.")
    page.fill("#id_max_rounds", "3")
    page.get_by_test_id("start-session").click()
    # htmx follows the start response's HX-Redirect; a queued autosave may restart that navigation,
    # so wait for where the page ends up rather than for one particular navigation.
    expect(page).to_have_url(re.compile(r".*/sessions/\d+/$"), timeout=15_000)
    expect(page.locator("#live-session")).to_be_visible()
    session = WritingSession.objects.get(title=TITLE)
    assert [a.name for a in session.agents.order_by("order")] == ["Academic writer", "Critical editor"]

    # Tokens arrive in a card while its turn is still streaming: the text grows under a "Streaming" badge.
    first = streaming_card(page, min_chars=10)
    assert first["badge"] == "Streaming"
    page.wait_for_function(
        f"""() => {{ const c = ({STREAMING_CARD_JS})();
              return c && c.id === '{first["id"]}' && c.text.length > {len(first["text"]) + 20}; }}"""
    )
    grown = page.evaluate(STREAMING_CARD_JS)
    assert grown["badge"] == "Streaming" and squash(grown["text"]).startswith(squash(first["text"]))
    expect(status_badge(page)).to_have_text("Running")
    assert page.title().startswith("Running · " + TITLE)

    # Pause: the turn in flight finishes (it is not cut off), then the session shows Paused.
    in_flight = int(page.evaluate(STREAMING_CARD_JS)["id"])
    page.get_by_test_id("pause").click()
    expect(status_badge(page)).to_have_text("Paused", timeout=30_000)
    expect(page.get_by_test_id("stop-banner")).to_contain_text("Paused by you")
    assert page.title().startswith("Paused · " + TITLE)
    assert Turn.objects.get(pk=in_flight).status == Turn.TurnStatus.COMPLETED
    expect(page.locator(f"#turn-{in_flight} [data-testid=turn-status]")).to_have_text("Completed")
    assert page.locator("[data-testid=turn][data-status=streaming]").count() == 0
    assert card_text(page, in_flight) == expected_card_text(Turn.objects.get(pk=in_flight))
    expect(page.get_by_test_id("resume")).to_be_visible()

    # Resume, then reload while a turn streams: the text picks up where it was, nothing repeated.
    page.get_by_test_id("resume").click()
    expect(status_badge(page)).to_have_text(re.compile("Queued|Running"))
    before = streaming_card(page, min_chars=60)
    page.reload()
    page.wait_for_function("() => document.getElementById('live-session').dataset.connected === 'true'")
    after = card_text(page, before["id"])
    old = squash(before["text"])
    assert after.startswith(old), f"after reload the card lost text:\n{old!r}\n{after!r}"
    assert after.count(old) == 1
    assert page.locator(f"#turn-{before['id']}").count() == 1
    # ...and it keeps streaming on the new page.
    page.wait_for_function(
        f"""() => {{ const body = document.getElementById('turn-{before["id"]}-body');
              return body && body.textContent.replace(/\\s+/g, ' ').trim().length > {len(after) + 20}; }}""",
        timeout=30_000,
    )
    continued = card_text(page, before["id"])
    assert continued.startswith(after) and continued.count(old) == 1

    # (The live page's screenshots for the README are taken by test_live_readable.py on a finished run.)

    # Stop: the banner and the badge say so within a few seconds, and the title follows.
    streaming_card(page)
    page.get_by_test_id("stop").click()
    expect(status_badge(page)).to_have_text("Stopped", timeout=10_000)
    expect(page.get_by_test_id("stop-banner")).to_contain_text("Stopped by you", timeout=10_000)
    page.wait_for_function("() => document.title.startsWith('Stopped · ')")
    session.refresh_from_db()
    assert session.status == Status.STOPPED

    # A finished session offers Continue.
    expect(page.get_by_test_id("continue")).to_be_visible()
    expect(page.get_by_test_id("pause")).to_have_count(0)

    # The page shows exactly the turns in the database, each with its saved text, once.
    turns = list(Turn.objects.filter(session=session).order_by("round", "pk"))
    assert len(turns) >= 2
    assert Turn.TurnStatus.STREAMING not in {t.status for t in turns}
    # The turn cut off by Stop keeps what it had written and says it was stopped.
    assert turns[-1].status == Turn.TurnStatus.CANCELLED and turns[-1].output_text
    expect(page.locator(f"#turn-{turns[-1].pk} [data-testid=turn-status]")).to_have_text("Stopped")
    page_ids = page.locator("[data-testid=turn]").evaluate_all("cards => cards.map(c => Number(c.dataset.turnId))")
    assert page_ids == [t.pk for t in turns]
    for turn in turns:
        assert card_text(page, turn.pk) == expected_card_text(turn), f"turn {turn.pk} ({turn.status}) differs"
    # A reload shows the same thing as the live page did.
    live_texts = [card_text(page, t.pk) for t in turns]
    page.reload()
    expect(status_badge(page)).to_have_text("Stopped")
    assert [card_text(page, t.pk) for t in turns] == live_texts
    assert page.title().startswith("Stopped · " + TITLE)
    expect(page.get_by_test_id("continue")).to_be_visible()
