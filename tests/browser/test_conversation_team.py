"""A conversation's Team & settings page in real Chromium, against real daphne and a django-q2 worker on the
offline Demo provider: open it from the chat, remove a specialist, add a data specialist, put it on a
model with its own prompt, save, and see triage hand the next message to it.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_conversation_team.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"
EMAIL = "teamlead@example.com"
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="200")


def test_add_a_specialist_on_a_model_and_triage_hands_the_next_message_to_it(live_app, page, login):
    from playwright.sync_api import expect

    from billing.services import grant_credits
    from orchestration.conversations import services as conversations
    from orchestration.models import Agent, LLMModel, Project

    user = make_user(EMAIL, password=PASSWORD)
    grant_credits(user=user, amount=10_000, key="test:topup", description="test credits")
    project = Project.objects.create(owner=user, name="Budget essay")
    conversation = conversations.create_conversation(project=project, user=user, title="Council budget")
    demo = LLMModel.objects.get(provider="demo", enabled=True, model_id="demo-writer")
    login(page, live_app, EMAIL, PASSWORD)
    page.on("dialog", lambda dialog: dialog.accept())  # "Remove … from the team?"

    page.goto(f"{live_app.url}{conversation.get_absolute_url()}")
    page.get_by_test_id("conversation-team").click()
    expect(page.get_by_role("heading", name="Team and settings")).to_be_visible()
    expect(page.get_by_test_id("specialist-count")).to_contain_text("3 of 3 specialists")

    # At the Free plan's limit: remove the editing specialist, then add a data specialist.
    editing = page.locator("[data-testid=team-agent][data-agent-name='Editing specialist']")
    editing.get_by_test_id("agent-remove").click()
    expect(editing).to_have_count(0)
    expect(page.get_by_test_id("specialist-count")).to_contain_text("2 of 3 specialists")
    page.get_by_test_id("add-kind").select_option("data")
    page.get_by_test_id("add-specialist").click()
    expect(page.get_by_test_id("add-saved")).to_contain_text("Added Data specialist")
    card = page.locator("[data-testid=team-agent][data-agent-name='Data specialist']")
    expect(card).to_be_visible()

    # Its model and prompt, saved from its card.
    card.get_by_label("Model", exact=True).select_option(str(demo.pk))
    card.get_by_label("Role prompt").fill(
        "You are the budget data specialist of a writing desk.\nCheck the council's figures and tables."
    )
    card.get_by_test_id("agent-save").click()
    saved = page.locator("[data-testid=team-agent][data-agent-name='Data specialist']")
    expect(saved.get_by_test_id("agent-saved")).to_contain_text("The next message uses it")
    agent = Agent.objects.get(session=conversation.session, name="Data specialist")
    assert agent.model_id == demo.pk and agent.role_prompt.startswith("You are the budget data specialist")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")  # the sticky top bar stays at the top of the picture
    page.screenshot(path=str(SCREENSHOTS / "conversation-team.png"), full_page=True)

    # The next message: triage hands it to the new specialist, who answers.
    page.get_by_test_id("team-back").click()
    page.wait_for_function("() => document.getElementById('chat').dataset.connected === 'true'")
    page.get_by_test_id("chat-input").fill("Are the numbers in this budget table right?")
    page.get_by_test_id("chat-send").click()
    handoff = page.get_by_test_id("chat-handoff")
    expect(handoff).to_contain_text("Triage handed to Data specialist", timeout=30_000)
    reply = page.locator("[data-testid=chat-message][data-role=assistant]").last
    expect(reply).to_contain_text("Data specialist here", timeout=30_000)
