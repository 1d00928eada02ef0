"""Suggest a team in real Chromium: ask the offline demo planner, edit a name, accept, see the team in the builder.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_team_suggestion.py
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from tests.conftest import make_user
from tests.studio_fixtures import catalogue_model

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"


def test_suggest_edit_and_accept_a_team_with_the_demo_planner(page, live_app, login):
    from billing.models import CreditEntry
    from billing.services import get_balance
    from orchestration.models import Agent, Criterion, Project, WritingSession

    demo = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    user = make_user("planner@example.com", password=PASSWORD)
    project = Project.objects.create(owner=user, name="Essays")
    session = WritingSession.objects.create(
        project=project,
        title="Bike lanes",
        brief="Write an op-ed arguing that cities should build protected bike lanes.",
    )
    old = Agent.objects.create(session=session, name="Old agent", model=demo, role_prompt="Write.")
    Criterion.objects.create(agent=old, name="Clarity")
    before = get_balance(user)

    login(page, live_app, "planner@example.com", PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/edit/")
    page.get_by_test_id("suggest-team").click()
    page.wait_for_url(re.compile(r".*/sessions/\d+/suggest/$"))
    assert "op-ed arguing" in page.locator("textarea[name=brief]").input_value()
    page.fill("textarea[name=goal]", "A persuasive op-ed for the city council, with evidence.")
    estimate = page.get_by_test_id("suggest-estimate")
    assert re.search(r"This costs at most \d+ credits? with Demo writer", estimate.inner_text())

    page.get_by_test_id("suggest-submit").click()
    charge = page.get_by_test_id("suggestion-charge")
    charge.wait_for()
    assert "Nothing is saved until you accept it" in charge.inner_text()
    charged = int(re.search(r"It cost (\d+) credit", charge.inner_text()).group(1))
    assert get_balance(user) == before - charged
    assert CreditEntry.objects.filter(user=user, kind="settlement", usage=charged).exists()
    assert "Demo planner (fixed rules, not a language model)" in page.get_by_test_id("proposal-rationale").inner_text()
    agents = page.get_by_test_id("proposed-agent")
    assert agents.count() == 2  # the Free plan: two agents, the sequential flow
    assert [a.name for a in session.agents.all()] == ["Old agent"]  # nothing saved yet

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "team-suggestion-proposal.png"), full_page=True)

    agents.nth(1).locator("input[name=a1-name]").fill("Evidence checker")
    page.get_by_test_id("accept-proposal").click()
    problems = page.get_by_test_id("accept-problems")
    problems.wait_for()
    assert "Replace the current team" in problems.inner_text()
    assert page.locator("input[name=a1-name]").input_value() == "Evidence checker"  # the edit survived
    page.get_by_label(re.compile("Replace the current team")).check()
    page.get_by_test_id("accept-proposal").click()

    page.wait_for_url(re.compile(r".*/sessions/\d+/edit/$"))
    titles = page.locator("[data-testid=agent-card] .agent-title").all_inner_texts()
    assert titles == ["Writer", "Evidence checker"]
    assert "Accepted the suggested team: 2 agents" in page.content()
    page.screenshot(path=str(SCREENSHOTS / "builder-suggested-team.png"), full_page=True)
    assert [a.name for a in Agent.objects.filter(session=session).order_by("order")] == ["Writer", "Evidence checker"]
