"""The session page for the parallel flows: columns, readable critiques, linked decisions, phases, report."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from billing.services import grant_credits
from orchestration import engine, live_flows, presets, services
from orchestration.catalogue import seed_catalogue
from orchestration.models import Project, Status, TeamPreset, Turn, WritingSession

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run_preset(owner, settings, monkeypatch):
    from billing.plans import PRO
    from billing.services import get_account

    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda session_id: None)
    settings.DEMO_TOKENS_PER_SECOND = 0
    account = get_account(owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=owner, amount=1_000_000, key="test:topup", description="test credits")
    seed_catalogue()
    presets.seed_presets()

    def run(slug: str) -> WritingSession:
        session = WritingSession.objects.create(
            project=Project.objects.create(owner=owner, name="P"), title="Bike lanes", brief=presets.DEMO_BRIEF
        )
        presets.apply_preset(session=session, preset=TeamPreset.objects.get(owner=None, slug=slug))
        services.start_session(session=session, user=owner)
        engine.drive(session.pk)
        session.refresh_from_db()
        assert session.status == Status.COMPLETED, session.stop_detail
        return session

    return run


def test_editorial_page_shows_editors_side_by_side_with_their_edits_and_synthesis_links_back(owner_client, run_preset):
    session = run_preset("writer-two-editors-synthesizer")
    html = owner_client.get(reverse("session_detail", args=[session.pk])).content.decode()
    # One group per round that ran (the honest demo may reach the score threshold before max rounds).
    assert session.current_round >= 2
    assert html.count('data-testid="parallel-group"') == session.current_round
    group = html.split('id="round-1-reviewing"', 1)[1].split('data-slot="synthesize"', 1)[0]
    assert group.count('data-slot="review:') == 2  # both editors in the one group of columns
    assert 'data-testid="turn-issues"' in html and 'data-testid="issue-severity">high<' in html
    assert "&lt;issues&gt;" not in html and '"severity":' not in html  # readable, never raw JSON
    assert f'href="#issue-{session.pk}-1-E1"' in html and f'id="issue-{session.pk}-1-E1"' in html
    assert "Which edits were taken" in html


def test_roundtable_page_has_phases_and_the_convergence_report_with_exports(owner_client, run_preset, outsider):
    session = run_preset("product-roundtable")
    html = owner_client.get(reverse("session_detail", args=[session.pk])).content.decode()
    assert 'data-testid="convergence-report"' in html and "No high-severity issues left" in html
    assert html.count('data-testid="report-round"') == 2
    assert 'data-testid="phases"' in html and "Reviewing (3 of 3 done)" in html

    md = owner_client.get(reverse("session_report", args=[session.pk, "md"]))
    assert md.status_code == 200 and "attachment" in md["Content-Disposition"]
    text = md.content.decode()
    assert text.startswith("# Convergence report: Bike lanes") and "## Round 2" in text and "| Product critic |" in text
    data = json.loads(owner_client.get(reverse("session_report", args=[session.pk, "json"])).content)
    # Each of the three critics raised at least one high-severity issue in round 1; none were left in round 2.
    assert data["stop_reason"] == "no_high_issues" and data["rounds"][0]["issue_counts"]["high"] >= 3
    assert data["rounds"][1]["issue_counts"]["high"] == 0 and data["rounds"][0]["issues"][0]["resolution"]["verdict"]
    assert owner_client.get(reverse("session_report", args=[session.pk, "pdf"])).status_code == 404

    from django.test import Client

    stranger = Client()
    stranger.force_login(outsider)
    assert stranger.get(reverse("session_report", args=[session.pk, "md"])).status_code == 404


def test_phases_count_a_missing_reviewer(run_preset):
    session = run_preset("writer-two-editors-synthesizer")
    last = Turn.objects.filter(session=session, slot__startswith="review:", round=session.current_round).first()
    last.result = {"given_up": True, "error": "Server error"}
    last.status = Turn.TurnStatus.FAILED
    last.save()
    writing, reviewing, _ = live_flows.phases(session)
    assert reviewing.done == 2 and reviewing.missing == [last.agent_name] and writing.state == "done"
