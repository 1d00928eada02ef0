"""The team service (orchestration/team.py): the rules every caller (pages, API, commands) shares."""

from __future__ import annotations

import pytest

from orchestration import team
from orchestration.models import Agent, Criterion, ReferenceDocument, Status, WritingSession
from orchestration.services import ServiceError
from tests.studio_fixtures import *  # noqa: F403 - fixtures

pytestmark = pytest.mark.django_db


def _running(session: WritingSession) -> WritingSession:
    WritingSession.objects.filter(pk=session.pk).update(status=Status.RUNNING)
    return session


def test_no_team_write_reaches_a_running_session(draft, owner, shipped_presets):
    writer = draft.agents.get(name="Writer")
    ref = ReferenceDocument.objects.create(session=draft, title="R", content="text")
    _running(draft)
    attempts = [
        lambda: team.add_default_agent(session=draft, user=owner),
        lambda: team.add_agent(session=draft, user=owner, fields={"name": "X", "model": writer.model}),
        lambda: team.update_agent(agent=writer, changes={"name": "Renamed"}),
        lambda: team.remove_agent(agent=writer),
        lambda: team.move_agent(agent=writer, direction=1),
        lambda: team.clear_team(session=draft, user=owner),
        lambda: team.apply_preset(session=draft, user=owner, preset=shipped_presets.first()),
        lambda: team.remove_reference(session=draft, reference_id=ref.pk),
    ]
    for attempt in attempts:
        with pytest.raises(ServiceError, match="running"):
            attempt()
    assert list(draft.agents.values_list("name", flat=True)) == ["Writer", "Editor"]
    assert ReferenceDocument.objects.filter(pk=ref.pk).exists()


def test_adding_agents_stops_at_the_plan_limit_with_an_upgrade_url(draft, owner):
    # Free allows two agents per session; the draft has two.
    with pytest.raises(ServiceError) as refused:
        team.add_default_agent(session=draft, user=owner)
    assert "Upgrade" in refused.value.message and refused.value.upgrade_url
    assert draft.agents.count() == 2


def test_update_agent_writes_criteria_and_never_touches_another_agents_rows(draft):
    writer, editor = draft.agents.order_by("order")
    editors_row = editor.criteria.get()
    clarity = writer.criteria.get()
    changed = team.update_agent(
        agent=writer,
        changes={"name": "Lead writer", "temperature": 0.2},
        criteria=[
            team.CriterionSpec(name="Clarity", weight=3.0, id=clarity.pk),
            team.CriterionSpec(name="Voice", weight=1.0),
            team.CriterionSpec(name="Hijack", weight=9.0, id=editors_row.pk),
        ],
    )
    assert changed  # a row was created: the page re-renders the card
    writer.refresh_from_db()
    assert (writer.name, writer.temperature) == ("Lead writer", 0.2)
    assert sorted(writer.criteria.values_list("name", "weight")) == [("Clarity", 3.0), ("Voice", 1.0)]
    assert Criterion.objects.get(pk=editors_row.pk).weight == 2.0
    assert team.update_agent(agent=writer, changes={}, delete_criteria=[editors_row.pk]) is False
    assert Criterion.objects.filter(pk=editors_row.pk).exists()


def test_a_preset_whose_flow_is_not_on_the_plan_is_refused(draft, owner, shipped_presets):
    editorial = shipped_presets.get(slug="writer-two-editors-synthesizer")
    with pytest.raises(ServiceError) as refused:
        team.apply_preset(session=draft, user=owner, preset=editorial)
    assert refused.value.upgrade_url
    assert list(draft.agents.values_list("name", flat=True)) == ["Writer", "Editor"]


def test_create_session_applies_the_preset_and_counts_the_quota(project, owner, shipped_presets):
    preset = shipped_presets.get(slug="academic-writer-critical-editor")
    session = team.create_session(user=owner, project=project, title="New", brief="Brief", preset=preset)
    assert session.agents.count() == 2 and session.flow == preset.flow
    with pytest.raises(ServiceError):
        team.create_session(user=owner.__class__.objects.create(username="x"), project=project, title="Not mine")


def test_remove_and_move_keep_the_order_dense(draft, owner):
    editor = draft.agents.get(name="Editor")
    team.move_agent(agent=editor, direction=-1)
    assert list(draft.agents.order_by("order").values_list("name", flat=True)) == ["Editor", "Writer"]
    team.remove_agent(agent=editor)
    assert list(Agent.objects.filter(session=draft).values_list("name", "order")) == [("Writer", 0)]
