"""The live page reads well (issue 14, items 11 and 12), in real Chromium against daphne and a real worker.

- While a turn streams, its card never shows the raw evaluation block; once it is done, the card shows
  the feedback and the scores as text.
- A finished turn shows its changes (a compact diff), its full text one click away; cards fold and stay
  folded when a push re-renders them; the document panel sits beside the transcript on a wide screen
  and behind a tab on a phone; the page follows the streaming card until the user scrolls away.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_live_readable.py
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import make_user

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"
EMAIL = "reader@example.com"

# Records every text a streaming card body shows, so the test can look for raw evaluation afterwards.
RECORD_STREAMING_JS = """() => {
  window.__streamed = [];
  const seen = () => document.querySelectorAll('[data-testid=turn][data-status=streaming] [data-testid=turn-body]')
    .forEach((body) => window.__streamed.push(body.textContent));
  new MutationObserver(seen).observe(document.getElementById('rounds'),
    { childList: true, subtree: true, characterData: true });
}"""
# What a raw evaluation block looks like in the text: JSON keys, the tag's name, "Clarity: 8.0/10" lines.
RAW_EVALUATION = re.compile(r'"scores"|\{\s*"|evaluation>|^\s*\w[\w ]*:\s*\d+(?:\.\d+)?/10\s*$', re.I | re.M)


pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="60")


def start_demo_session(owner, *, title: str, max_rounds: int):
    """A session from the shipped two-agent preset on the demo model, started as its owner would."""
    from orchestration import presets, services
    from orchestration.models import Project, TeamPreset, WritingSession

    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(project=project, title=title, brief="Argue for protected bike lanes.")
    preset = TeamPreset.objects.get(name="Academic writer + critical editor", owner=None)
    presets.apply_preset(session=session, preset=preset, default_model=presets.default_model_for(owner))
    WritingSession.objects.filter(pk=session.pk).update(
        max_rounds=max_rounds, score_threshold=None, convergence_percent=None
    )
    session.refresh_from_db()

    def start() -> None:
        from django.db import connection

        try:
            services.start_session(session=session, user=owner)
        finally:
            connection.close()

    # Start broadcasts with async_to_sync, which refuses to run beside Playwright's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(start).result()
    return session


def squash(text: str) -> str:
    return " ".join(text.split())


def test_a_turn_never_streams_its_raw_evaluation_and_then_shows_feedback_and_scores(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Turn

    owner = make_user(EMAIL, password=PASSWORD)
    login(page, live_app, EMAIL, PASSWORD)
    session = start_demo_session(owner, title="Critique visible", max_rounds=1)
    page.goto(f"{live_app.url}/sessions/{session.pk}/")
    page.evaluate(RECORD_STREAMING_JS)

    # Both turns of the round stream and finish while the page watches.
    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=90_000)
    streamed = page.evaluate("() => window.__streamed")
    assert len(streamed) > 5, "the page never saw a turn stream"
    raw = [text for text in streamed if RAW_EVALUATION.search(text)]
    assert not raw, f"a streaming card showed its raw evaluation:\n{raw[-1][-300:]}"

    turns = list(Turn.objects.filter(session=session).order_by("round", "pk"))
    assert len(turns) == 2 and all(t.status == Turn.TurnStatus.COMPLETED for t in turns)
    for turn in turns:
        card = page.locator(f"#turn-{turn.pk}")
        assert turn.feedback, "the demo's evaluation carries feedback"
        feedback = card.get_by_test_id("turn-feedback")
        expect(feedback).to_be_visible()
        assert squash(turn.feedback) in squash(feedback.inner_text())
        scores = card.get_by_test_id("scores")
        expect(scores).to_be_visible()
        for name, value in turn.scores.items():
            assert re.search(rf"{re.escape(name)}[^\n]*{value:.1f}/10", scores.inner_text()), scores.inner_text()
        # The evaluation block itself is nowhere in the card, raw or rendered.
        assert not RAW_EVALUATION.search(card.inner_text())


def test_turns_show_their_changes_fold_and_the_document_is_beside_or_behind_a_tab(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Turn

    owner = make_user(EMAIL, password=PASSWORD)
    login(page, live_app, EMAIL, PASSWORD)
    session = start_demo_session(owner, title="Readable transcript", max_rounds=2)
    page.goto(f"{live_app.url}/sessions/{session.pk}/")

    # Fold the card that is streaming now: when it finishes and is re-rendered, it stays folded.
    page.wait_for_selector("[data-testid=turn][data-status=streaming]", timeout=30_000)
    first_id = page.locator("[data-testid=turn][data-status=streaming]").first.get_attribute("data-turn-id")
    page.locator(f"#turn-{first_id} > .turn-fold > summary").click()
    expect(page.locator(f"#turn-{first_id} [data-testid=turn-body]")).to_be_hidden()
    expect(page.locator(f"#turn-{first_id}")).to_have_attribute("data-status", "completed", timeout=60_000)
    assert page.locator(f"#turn-{first_id} > .turn-fold").evaluate("fold => fold.open") is False
    expect(page.locator(f"#turn-{first_id} [data-testid=turn-status]")).to_be_visible()

    expect(page.get_by_test_id("status-badge")).to_have_text("Completed", timeout=120_000)
    turns = list(Turn.objects.filter(session=session).order_by("round", "pk").select_related("version"))
    assert len(turns) == 4

    # Every finished turn says what it changed; its full text waits behind "Show full text".
    page.get_by_test_id("expand-all").click()
    for turn in turns:
        card = page.locator(f"#turn-{turn.pk}")
        changes = card.get_by_test_id("turn-changes")
        expect(changes).to_be_visible()
        expect(card.get_by_test_id("turn-body")).to_be_hidden()
        version = getattr(turn, "version", None)
        if version is None:  # the turn handed the document back unchanged
            expect(changes).to_contain_text("No change to the document")
        elif version.number == 1:
            expect(changes).to_contain_text("First draft")
        else:
            expect(changes).to_contain_text(f"v{version.number}")
            expect(changes).to_contain_text(re.compile(r"\+\d+ −\d+ words?"))
    revised = [t for t in turns if getattr(t, "version", None) and t.version.number > 1]
    assert revised, "the demo revises the document in round 2"
    later = page.locator(f"#turn-{revised[-1].pk}")
    assert later.locator(".diff-compact ins, .diff-compact del").count() > 0
    later.get_by_test_id("show-full-text").click()
    expect(later.get_by_test_id("turn-body")).to_be_visible()
    later.get_by_test_id("show-full-text").click()

    # The transcript is about changes: the turns' full texts are not on the page until asked for. Opening
    # every "Show full text" grows the transcript by (nearly) the full texts' own height.
    transcript = page.get_by_test_id("live-transcript").bounding_box()["height"]
    full_total, expanded = page.evaluate(
        "() => { const folds = [...document.querySelectorAll('[data-testid=live-transcript] [data-testid=turn-body]')]"
        "    .map(b => [b, b.closest('details')]);"
        "  folds.forEach(([b, d]) => { d.open = true; });"
        "  const total = folds.reduce((sum, [b]) => sum + b.scrollHeight, 0);"
        "  const h = document.querySelector('[data-testid=live-transcript]').getBoundingClientRect().height;"
        "  folds.forEach(([b, d]) => { d.open = false; });"
        "  return [total, h]; }"
    )
    assert full_total > 0
    assert transcript + 0.9 * full_total <= expanded, (transcript, full_total, expanded)

    # Collapse all folds every card into its header.
    page.get_by_test_id("collapse-all").click()
    for turn in turns:
        expect(page.locator(f"#turn-{turn.pk} [data-testid=turn-changes]")).to_be_hidden()

    # Wide screen: the document panel is beside the transcript and stays in view while scrolling.
    transcript_box = page.get_by_test_id("live-transcript").bounding_box()
    document_box = page.get_by_test_id("live-document").bounding_box()
    assert document_box["x"] >= transcript_box["x"] + transcript_box["width"]
    expect(page.get_by_test_id("tab-document")).to_be_hidden()
    page.get_by_test_id("expand-all").click()
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    expect(page.get_by_test_id("document-current")).to_be_in_viewport()

    # Screenshots for the README: a finished two-round run, desktop and dark.
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "live-session.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(SCREENSHOTS / "live-session-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")

    # Phone: one panel at a time, switched by tabs.
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("() => window.scrollTo(0, 0)")
    expect(page.get_by_test_id("tab-transcript")).to_be_visible()
    expect(page.get_by_test_id("live-transcript")).to_be_visible()
    expect(page.get_by_test_id("live-document")).to_be_hidden()
    page.get_by_test_id("tab-document").click()
    expect(page.get_by_test_id("live-document")).to_be_visible()
    expect(page.get_by_test_id("live-transcript")).to_be_hidden()
    expect(page.get_by_test_id("tab-document")).to_have_attribute("aria-selected", "true")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.get_by_test_id("tab-transcript").click()
    expect(page.get_by_test_id("live-transcript")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "live-session-phone.png"), full_page=True)


def test_the_page_follows_the_streaming_card_until_the_user_scrolls_away(live_app, page, login):
    from playwright.sync_api import expect

    owner = make_user(EMAIL, password=PASSWORD)
    login(page, live_app, EMAIL, PASSWORD)
    session = start_demo_session(owner, title="Follow me", max_rounds=3)
    # A short window, so the streaming card soon reaches below the fold.
    page.set_viewport_size({"width": 1280, "height": 520})
    page.goto(f"{live_app.url}/sessions/{session.pk}/")

    card_end = """() => { const c = document.querySelector('[data-testid=turn][data-status=streaming]');
      if (!c) return null; const b = c.getBoundingClientRect();
      return {bottom: b.bottom, height: window.innerHeight}; }"""
    # Following: the streaming card's end stays in view as it grows past the fold.
    page.wait_for_function(f"() => {{ const e = ({card_end})(); return e && window.scrollY > 0; }}", timeout=60_000)
    # Sampled by polling: between a chunk's render and the follow scroll the card can be a frame ahead.
    page.wait_for_function(f"() => {{ const e = ({card_end})(); return e === null || e.bottom <= e.height + 60; }}")
    expect(page.get_by_test_id("follow-live")).to_be_hidden()

    # The user scrolls to the top: the page stays there while text keeps arriving, and offers a way back.
    page.mouse.wheel(0, -100_000)
    page.wait_for_function("() => window.scrollY === 0")
    expect(page.get_by_test_id("follow-live")).to_be_visible(timeout=30_000)
    length = page.evaluate("() => document.getElementById('rounds').textContent.length")
    page.wait_for_function(
        f"() => document.getElementById('rounds').textContent.length > {length + 200}", timeout=60_000
    )
    assert page.evaluate("() => window.scrollY") == 0

    # Following again from the button.
    page.wait_for_selector("[data-testid=turn][data-status=streaming]", timeout=60_000)
    page.get_by_test_id("follow-live").click()
    page.wait_for_function(
        f"() => {{ const e = ({card_end})(); return !e || e.bottom <= e.height + 60; }}", timeout=30_000
    )
    assert page.evaluate("() => window.scrollY") > 0
    page.goto(live_app.url + "/dashboard/")  # leave before the server stops (no reconnect noise)
