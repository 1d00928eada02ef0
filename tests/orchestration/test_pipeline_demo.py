"""The "Researched article" preset runs offline on the Demo provider: research with citations to real
passages, an outline, a draft in the owner's settings, a review whose edits are applied, a rebuild when the
review scores under the threshold."""

from __future__ import annotations

import pytest

from orchestration.models import DocumentVersion, Passage, Project, Status, StopReason, Turn, WritingSession
from tests.orchestration.test_engine import run_to_end, start

pytestmark = pytest.mark.django_db(transaction=True)

TREES = """# Urban trees

Street trees cool the pavement by several degrees in summer, and shade lowers the energy cities spend on cooling.

## Storm water

A tree's roots and crown slow storm water, so drains overflow less often during heavy rain in cities.

## Costs

Planting trees costs little; watering young trees for their first three years is the larger cost for cities.
"""


def demo_pipeline_session(owner, **config) -> WritingSession:
    from orchestration import presets, services
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import TeamPreset

    seed_catalogue()
    presets.seed_presets()
    preset = TeamPreset.objects.get(owner=None, slug="researched-article")
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=owner, name="Demo"),
        title="Why cities need trees",
        brief=(
            "Write an article arguing that cities should plant more street trees to cool streets and slow storm water."
        ),
    )
    presets.apply_preset(session=session, preset=preset)
    if config:
        WritingSession.objects.filter(pk=session.pk).update(flow_config={**session.flow_config, **config})
        session.refresh_from_db()
    services.add_references(session=session, user=owner, items=[("Tree notes", TREES, "trees.md")])
    return session


def test_researched_article_runs_offline_with_real_citations_applied_edits_and_a_rebuild(
    enqueued, rich_owner, settings
):
    settings.DEMO_TOKENS_PER_SECOND = 0
    session = demo_pipeline_session(rich_owner, format="report", tone="formal", length_words=300)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED, session.stop_detail

    turns = {(t.round, t.slot): t for t in Turn.objects.filter(session=session, status="completed")}
    research = turns[(1, "research")]
    sources = research.result["sources"]
    assert sources, "the researcher read retrieved passages"
    for source in sources:  # every source is a real passage of this session's reference
        passage = Passage.objects.get(pk=source["passage_id"], session=session)
        assert passage.reference.title == "Tree notes" and passage.ordinal == source["ordinal"]
    assert research.result["cited"] and not research.result["unknown_citations"]
    assert all(f["citations"] for f in research.result["findings"])

    outline = turns[(1, "outline")]
    assert outline.result["sections"][0]["title"] == "Introduction"

    draft = turns[(1, "build")].output_text
    assert "## Executive summary" in draft  # the report format
    assert draft.startswith("# ")

    review = turns[(1, "review")]
    applied = [e for e in review.result["edits"] if e["applied"]]
    assert applied and review.result["applied"] == len(applied)
    assert any(f["kind"] == "unsupported" for f in review.result["flags"])
    merged = DocumentVersion.objects.get(turn=review).content
    for edit in applied:
        assert edit["replace"] in merged

    # The first review scored under 8: built again with the review, reviewed again, then done.
    assert review.overall_score < 8.0
    assert (2, "build") in turns and (2, "review") in turns
    assert turns[(2, "review")].overall_score >= 8.0
    assert session.stop_reason == StopReason.SCORE_THRESHOLD
    assert session.document == DocumentVersion.objects.filter(session=session).order_by("-number").first().content
    assert "It is worth noting" not in session.document


def turns_sources(session):
    return Turn.objects.get(session=session, slot="research", status="completed").result["sources"]


def test_the_page_shows_stages_links_citations_to_passages_and_exports_the_report(
    enqueued, rich_owner, settings, client, outsider
):
    import html
    import json
    import re

    from django.urls import reverse

    settings.DEMO_TOKENS_PER_SECOND = 0
    session = demo_pipeline_session(rich_owner)
    start(session, rich_owner)
    run_to_end(session)
    client.force_login(rich_owner)
    page = client.get(reverse("session_detail", args=[session.pk])).content.decode()

    phases = re.findall(r'data-phase="(\w+)"', page)
    assert phases == ["building", "review"]  # round 2 builds and reviews again; research and plan were round 1
    assert page.count('data-slot="research"') == 1 and 'data-slot="outline"' in page
    links = set(re.findall(r'href="#passage-(\d+)" data-testid="citation"', page))
    assert links, "citations link to passages"
    for pk in links:  # each link lands on the passage, shown with its text, on the same page
        passage = Passage.objects.get(pk=pk, session=session)
        anchor = re.search(rf'<li id="passage-{pk}"[^>]*>(.*?)</li>', page, re.S)
        assert anchor and passage.text.splitlines()[-1] in html.unescape(anchor.group(1))
    # The current version in the document panel links its citations to the same passages.
    panel = page.split('data-testid="document-current"', 1)[1].split("</div>", 1)[0]
    panel_links = set(re.findall(rf'href="/sessions/{session.pk}/#passage-(\d+)"', panel))
    assert panel_links and panel_links <= {str(s["passage_id"]) for s in turns_sources(session)}
    assert 'data-testid="stage-usage"' in page and page.count('data-testid="stage-row"') == 6
    assert 'data-testid="review-edit" data-applied="true"' in page

    exported = client.get(reverse("session_report", args=[session.pk, "json"])).json()
    assert [s["stage"] for s in exported["stages"]] == ["Research", "Plan", "Build", "Review", "Build", "Review"]
    assert sum(s["credits"] for s in exported["stages"]) == exported["total_credits"] == session.credits_used
    assert any(s["cited_in_final"] for s in exported["sources"])
    assert exported["reviews"][0]["applied"] >= 1
    markdown = client.get(reverse("session_report", args=[session.pk, "md"])).content.decode()
    assert "## Sources" in markdown and "## Usage per stage" in markdown
    assert json.dumps(exported)  # serialisable

    client.force_login(outsider)
    assert client.get(reverse("session_report", args=[session.pk, "json"])).status_code == 404
