"""The reasoning panel in real Chromium: a thinking model's thoughts stream live into a collapsed part of
the agent's card, apart from the text, and a reload keeps them.

Real daphne and a real django-q2 worker; the worker's Anthropic SDK talks to the fake LLM server, which
streams a `thinking` content block before the text. Run separately:
DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_reasoning_panel.py
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import make_user
from tests.live import start_app

PASSWORD = "correct horse battery staple"
EMAIL = "thinker@example.com"
THOUGHT = (
    "The brief asks for an argument, so I should lead with the safety numbers. "
    "Then the cost objection, answered with maintenance figures. "
    "Finally a short call to action; keep it under three paragraphs."
)
REPLY = (
    "# Bike lanes\n\nProtected lanes cut injuries and cost little to keep.\n\n"
    '<evaluation>\n{"scores": {"Clarity": 8}, "feedback": "Add a source."}\n</evaluation>'
)


@pytest.fixture
def thinking_app(transactional_db, fake_llm):
    """Daphne and a worker whose Anthropic calls go to the fake server, ~20 tokens a second."""
    from orchestration.catalogue import seed_catalogue

    seed_catalogue()  # transactional tests flush the catalogue the migration seeded
    fake_llm.tokens_per_second = 20
    app = start_app(seed=False, env={"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": fake_llm.url})
    yield app
    app.stop()


def _thinking_session(user):
    from billing.plans import PRO
    from billing.services import get_account, grant_credits
    from orchestration.models import Agent, Criterion, LLMModel, Project, Reasoning, WritingSession

    account = get_account(user)
    account.plan = PRO  # Sonnet is not on the Free plan
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=100_000, key="test:thinker", description="test credits")
    model = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    assert model.reasoning == Reasoning.THINKING_BUDGET  # the seeded catalogue's capability
    project = Project.objects.create(owner=user, name="Essays")
    session = WritingSession.objects.create(project=project, title="Lanes", brief="Argue for bike lanes.", max_rounds=1)
    agent = Agent.objects.create(
        session=session,
        name="Thinker",
        model=model,
        role_prompt="Write the essay.",
        max_output_tokens=1024,
        thinking_budget_tokens=2048,
    )
    Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


def test_reasoning_fills_live_collapsed_apart_from_the_text_and_survives_a_reload(
    thinking_app, page, login, fake_llm, settings
):
    from playwright.sync_api import expect

    from orchestration import services
    from orchestration.models import Turn

    settings.PROVIDERS = fake_llm.provider_settings()  # start validation runs in this process
    user = make_user(EMAIL, password=PASSWORD)
    session = _thinking_session(user)
    fake_llm.reply(REPLY, thinking=THOUGHT)
    login(page, thinking_app, EMAIL, PASSWORD)
    # Started like the builder's Start button does; in a thread of its own, because the broadcast it
    # makes on commit cannot run beside Playwright's event loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(services.start_session, session=session, user=user).result()
    page.goto(thinking_app.url + session.get_absolute_url())

    # While the turn streams, its reasoning panel appears and grows; it stays collapsed.
    panel = page.get_by_test_id("turn-reasoning")
    body = page.get_by_test_id("turn-reasoning-body")
    expect(panel).to_be_visible(timeout=30_000)
    page.wait_for_function(
        """() => { const card = document.querySelector('[data-testid=turn][data-status=streaming]');
                   const b = card && card.querySelector('[data-testid=turn-reasoning-body]');
                   return b && b.textContent.length > 20; }""",
        timeout=30_000,
    )
    first = body.text_content()
    assert THOUGHT.startswith(first)
    assert panel.evaluate("d => d.open") is False
    expect(body).to_be_hidden()
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=turn-reasoning-body]').textContent.length > {len(first) + 20}",
        timeout=30_000,
    )
    assert page.locator("[data-testid=turn][data-status=streaming]").count() == 1  # still live

    # The reader opens it; the turn finishing (its card re-rendered) does not close it.
    panel.locator("summary").click()
    expect(body).to_be_visible()
    expect(page.get_by_test_id("turn-status")).to_have_text("Completed", timeout=30_000)
    expect(page.get_by_test_id("turn-reasoning")).to_have_attribute("open", "")
    expect(page.get_by_test_id("turn-reasoning-body")).to_have_text(THOUGHT)
    text = page.get_by_test_id("turn-body").text_content()
    assert "Protected lanes cut injuries" in text and "safety numbers" not in text

    turn = Turn.objects.get(session=session)
    assert turn.reasoning == THOUGHT and turn.reasoning_tokens > 0

    # A reload rebuilds it from the database: collapsed again, same text, labelled as a summary.
    page.reload()
    panel = page.get_by_test_id("turn-reasoning")
    expect(panel).to_be_visible()
    assert panel.evaluate("d => d.open") is False
    expect(panel.locator("summary")).to_contain_text("a summary")
    expect(panel.locator("summary")).to_contain_text(f"{turn.reasoning_tokens} tokens")
    assert page.get_by_test_id("turn-reasoning-body").text_content() == THOUGHT
    expect(page.get_by_test_id("reasoning-tokens")).to_have_text(f"{turn.reasoning_tokens} reasoning")
