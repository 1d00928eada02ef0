"""A pipeline conversation in real Chromium, against real daphne and a django-q2 worker on the offline Demo
provider: start it with the Pipeline desk, send a message, watch the four stage lines (research, plan, build,
review) stream one after the other, then read the reviewed reply with its cited source and expand a stage.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_pipeline_chat.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import element_screenshot
from tests.conftest import make_user

PASSWORD = "correct horse battery staple"
EMAIL = "pipeliner@example.com"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Records every stage line that streamed: its stage, in order, and the most text seen in it while streaming.
WATCH_JS = """() => {
  window.stagesSeen = [];
  window.stageText = {};
  const note = () => {
    document.querySelectorAll('[data-testid=chat-stage-stream]').forEach((el) => {
      const stage = el.dataset.stage;
      if (!window.stagesSeen.includes(stage)) window.stagesSeen.push(stage);
      const text = el.querySelector('.stream-text').textContent.trim().length;
      window.stageText[stage] = Math.max(window.stageText[stage] || 0, text);
    });
  };
  new MutationObserver(note).observe(document.getElementById('transcript'),
    {childList: true, subtree: true, characterData: true});
}"""


# Daphne and a worker whose Demo model writes at ~30 tokens a second: each stage streams for a few seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="30")


def test_a_pipeline_conversation_streams_four_stage_lines_and_the_reviewed_reply(live_app, page, login):
    from playwright.sync_api import expect

    from billing.plans import PRO
    from billing.services import get_account
    from orchestration.models import Project, ReferenceDocument, WritingSession
    from orchestration.retrieval import index_references

    user = make_user(EMAIL, password=PASSWORD)
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    project = Project.objects.create(owner=user, name="Street trees")
    source = WritingSession.objects.create(project=project, title="Essay", brief="Trees")
    reference = ReferenceDocument.objects.create(
        session=source,
        title="Shade study",
        content="# Shade\n\nStreet trees shade pavements and cut summer surface temperatures by up to 11 degrees.",
    )
    index_references([reference])
    login(page, live_app, EMAIL, PASSWORD)

    page.goto(f"{live_app.url}/conversations/?project={project.pk}")
    page.get_by_test_id("conversation-preset").select_option(label="Pipeline desk")
    page.get_by_test_id("conversation-new").click()
    expect(page.get_by_test_id("conversation-flow-line")).to_contain_text("Research, plan, build, review")
    expect(page.get_by_test_id("conversation-flow-line")).to_contain_text("Researcher, Planner, Builder, Reviewer")
    page.wait_for_function("() => document.getElementById('chat').dataset.connected === 'true'")
    page.evaluate(WATCH_JS)

    page.get_by_test_id("chat-input").fill("Why do streets need trees for shade in summer?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-input")).to_have_value("")
    stream = page.locator("[data-testid=chat-stage-stream][data-stage=research]")
    expect(stream).to_contain_text("Research", timeout=30_000)
    expect(page.get_by_test_id("chat-stop")).to_be_visible()

    reply = page.locator("[data-testid=chat-message][data-role=assistant]")
    expect(reply).to_contain_text("Demo (offline, not a language model)", timeout=120_000)
    expect(reply).to_contain_text("cut summer surface temperatures")
    expect(reply.get_by_test_id("chat-sources")).to_contain_text("[1] Shade study, passage 1")
    assert page.evaluate("window.stagesSeen") == ["research", "plan", "build", "review"]
    streamed = page.evaluate("window.stageText")
    assert all(streamed[stage] > 0 for stage in ("research", "plan", "build", "review")), streamed
    assert page.get_by_test_id("chat-stage-stream").count() == 0  # every stream became its stage line

    lines = page.get_by_test_id("chat-stage")
    expect(lines).to_have_count(4)
    expect(lines.nth(0)).to_contain_text("Research · Researcher: 1 finding from 1 passage, citing [1]")
    expect(lines.nth(1)).to_contain_text("Plan · Planner")
    expect(lines.nth(2)).to_contain_text("Build · Builder")
    expect(lines.nth(3)).to_contain_text("Review · Reviewer: scored")
    findings = lines.nth(0).locator(".chat-tool-result")
    expect(findings).to_be_hidden()  # collapsed: one line per stage
    lines.nth(0).locator("summary").click()
    expect(findings).to_contain_text("Findings")
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()
    element_screenshot(page.locator("#chat"), str(SCREENSHOTS / "pipeline-chat.png"))
