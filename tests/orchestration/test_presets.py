"""Shipped presets: seeding, applying to a session, and saving a team as a personal preset."""

from __future__ import annotations

import pytest

from orchestration import presets
from orchestration.models import Agent, Flow, TeamPreset, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures


def test_seed_presets_is_idempotent_and_ships_the_academic_team(db, demo_llm):
    presets.seed_presets()
    presets.seed_presets()
    shipped = TeamPreset.objects.filter(owner=None, slug="academic-writer-critical-editor")
    assert shipped.count() == 1
    preset = shipped.get()
    assert preset.name == "Academic writer + critical editor" and preset.flow == Flow.SEQUENTIAL
    agents = preset.data["agents"]
    assert [(a["name"], a["role"]) for a in agents] == [("Academic writer", "writer"), ("Critical editor", "editor")]
    for agent in agents:
        assert agent["model"] == "demo:demo-writer"
        assert 3 <= len(agent["criteria"]) <= 4 and all(c["weight"] > 0 for c in agent["criteria"])
        assert len(agent["role_prompt"]) > 200
    assert (preset.data["max_rounds"], preset.data["score_threshold"]) == (4, 8.5)


def test_seed_presets_works_with_historical_models(db):
    from django.apps import apps

    presets.seed_presets(apps)
    assert TeamPreset.objects.filter(owner=None).count() == len(presets.SHIPPED_PRESETS)


def test_apply_preset_builds_the_team_with_criteria_and_termination(draft, shipped_presets, demo_llm):
    presets.apply_preset(session=draft, preset=shipped_presets.get(slug="academic-writer-critical-editor"))
    draft.refresh_from_db()
    writer, editor = draft.agents.order_by("order")
    assert (writer.name, writer.order, editor.name, editor.order) == ("Academic writer", 0, "Critical editor", 1)
    assert writer.model == demo_llm and editor.model == demo_llm
    assert list(editor.criteria.values_list("name", flat=True)) == [
        "Clarity",
        "Argument strength",
        "Evidence",
        "Structure",
    ]
    assert (draft.max_rounds, draft.score_threshold, draft.threshold_agent) == (4, 8.5, editor)
    # The previous team is replaced, not appended to.
    assert not Agent.objects.filter(session=draft, name__in=["Writer", "Editor"]).exists()


def test_a_shipped_preset_uses_the_users_default_model(draft, shipped_presets, cheap_llm):
    presets.apply_preset(
        session=draft, preset=shipped_presets.get(slug="academic-writer-critical-editor"), default_model=cheap_llm
    )
    assert {a.model for a in draft.agents.all()} == {cheap_llm}


def test_default_model_falls_back_to_demo_when_the_preference_is_disabled(owner, demo_llm, disabled_llm):
    from accounts.models import Profile

    assert presets.default_model_for(owner) == demo_llm
    Profile.objects.update_or_create(user=owner, defaults={"default_model": disabled_llm})
    assert presets.default_model_for(owner) == demo_llm


def test_save_team_as_preset_round_trips(owner, draft, project, cheap_llm, demo_llm):
    draft.threshold_agent = draft.agents.get(name="Editor")
    draft.score_threshold = 9
    draft.save()
    editor = draft.agents.get(name="Editor")
    editor.fallback_model = demo_llm
    editor.save()
    preset = presets.save_team_as_preset(session=draft, user=owner, name="Duo")
    assert preset.owner == owner and preset.slug == "duo"
    assert preset.data["agents"][1]["model"] == "openai:studio-mini"
    assert preset.data["agents"][1]["fallback_model"] == "demo:demo-writer"

    # The same name (also spelled differently) is refused unless the caller asks to replace it.
    with pytest.raises(presets.PresetNameTaken, match="already have a preset named “Duo”"):
        presets.save_team_as_preset(session=draft, user=owner, name=" duo ")
    assert presets.save_team_as_preset(session=draft, user=owner, name="Duo", replace=True).pk == preset.pk
    with pytest.raises(presets.PresetError, match="name"):
        presets.save_team_as_preset(session=draft, user=owner, name="   ")

    fresh = WritingSession.objects.create(project=project, title="Fresh", brief="b")
    presets.apply_preset(session=fresh, preset=preset, default_model=demo_llm)
    fresh.refresh_from_db()
    copied = fresh.agents.get(name="Editor")
    # A personal preset keeps its own models; the default only fills gaps.
    assert copied.model == cheap_llm and copied.fallback_model == demo_llm
    assert fresh.threshold_agent == copied and fresh.score_threshold == 9


def test_a_preset_whose_model_was_disabled_falls_back_to_the_default(owner, draft, project, cheap_llm, demo_llm):
    preset = presets.save_team_as_preset(session=draft, user=owner, name="Duo")
    cheap_llm.enabled = False
    cheap_llm.save()
    fresh = WritingSession.objects.create(project=project, title="Fresh", brief="b")
    presets.apply_preset(session=fresh, preset=preset, default_model=demo_llm)
    assert fresh.agents.get(name="Editor").model == demo_llm


def test_resolve_model_ref_rejects_garbage(db, demo_llm):
    assert presets.resolve_model_ref("demo:demo-writer") == demo_llm
    for ref in ["", None, "demo", "nope:nothing", ":"]:
        assert presets.resolve_model_ref(ref) is None
