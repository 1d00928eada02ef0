"""The model catalogue seed, the "no price, no use" rule, and the staff admin."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from orchestration.catalogue import CATALOGUE, seed_catalogue, validate_model_for_use
from orchestration.models import (
    Agent,
    Criterion,
    DocumentVersion,
    LLMModel,
    Project,
    SessionEvent,
    Status,
    TeamPreset,
    Turn,
    WritingSession,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _catalogue():
    # Transactional tests elsewhere flush the tables the data migration filled; seed again.
    seed_catalogue()


def unpriced_model(**extra) -> LLMModel:
    fields = {
        "provider": "anthropic",
        "model_id": "claude-x-preview",
        "display_name": "Claude X",
        "context_window": 200_000,
        "enabled": False,
    }
    fields.update(extra)
    return LLMModel.objects.create(**fields)


# --------------------------------------------------------------------------------------------------
# Seed
# --------------------------------------------------------------------------------------------------


def test_seed_creates_every_catalogue_model_once():
    LLMModel.objects.all().delete()

    created = seed_catalogue()
    again = seed_catalogue()

    assert created == len(CATALOGUE)
    assert again == 0
    assert LLMModel.objects.count() == len(CATALOGUE)


def test_the_data_migration_seeds_the_catalogue():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("orchestration.migrations.0003_seed_catalogue_presets_watchdog")
    LLMModel.objects.all().delete()
    migration.seed_catalogue(apps, None)
    for entry in CATALOGUE:
        assert LLMModel.objects.filter(provider=entry["provider"], model_id=entry["model_id"]).exists()


def test_seed_accepts_an_app_registry_like_a_data_migration():
    from django.apps import apps

    LLMModel.objects.filter(provider="xai").delete()

    assert seed_catalogue(apps) == 2
    assert seed_catalogue(apps) == 0


def test_every_seeded_model_is_priced_and_usable():
    seed_catalogue()
    for entry in CATALOGUE:
        model = LLMModel.objects.get(provider=entry["provider"], model_id=entry["model_id"])
        assert model.is_priced, model
        assert model.cached_input_price_per_mtok is not None, model
        assert validate_model_for_use(model) is None, model
        assert model.context_window > model.max_output_tokens, model
        assert Decimal("1.00") <= model.credit_multiplier <= Decimal("3.00"), model


def test_demo_model_is_labelled_and_priced_at_zero():
    seed_catalogue()
    demo = LLMModel.objects.get(provider="demo", model_id="demo-writer")

    assert demo.display_name == "Demo (offline, not a language model)"
    assert (demo.input_price_per_mtok, demo.cached_input_price_per_mtok, demo.output_price_per_mtok) == (0, 0, 0)
    assert demo.credit_multiplier == Decimal("1.00")
    assert demo.context_window == 200_000


def test_catalogue_covers_every_hosted_provider_and_a_local_model():
    providers = {entry["provider"] for entry in CATALOGUE}

    assert providers == {"demo", "anthropic", "openai", "gemini", "xai", "compatible"}
    sonnet = next(e for e in CATALOGUE if e["model_id"] == "claude-sonnet-4-5")
    assert (sonnet["input_price_per_mtok"], sonnet["cached_input_price_per_mtok"], sonnet["output_price_per_mtok"]) == (
        Decimal("3.00"),
        Decimal("0.30"),
        Decimal("15.00"),
    )


def test_reseeding_keeps_staff_price_changes_but_fills_missing_prices():
    seed_catalogue()
    sonnet = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    sonnet.output_price_per_mtok = Decimal("16.00")
    sonnet.credit_multiplier = Decimal("2.00")
    sonnet.save()
    haiku = LLMModel.objects.get(provider="anthropic", model_id="claude-haiku-4-5")
    haiku.input_price_per_mtok = None
    haiku.save()

    assert seed_catalogue() == 1

    sonnet.refresh_from_db()
    haiku.refresh_from_db()
    assert sonnet.output_price_per_mtok == Decimal("16.00")
    assert sonnet.credit_multiplier == Decimal("2.00")
    assert haiku.input_price_per_mtok == Decimal("1.00")


def test_reseeding_with_update_existing_restores_the_seeded_values():
    seed_catalogue()
    LLMModel.objects.filter(model_id="claude-sonnet-4-5").update(output_price_per_mtok=Decimal("16.00"))

    assert seed_catalogue(update_existing=True) == 1
    assert LLMModel.objects.get(model_id="claude-sonnet-4-5").output_price_per_mtok == Decimal("15.00")


# --------------------------------------------------------------------------------------------------
# "No price, no use"
# --------------------------------------------------------------------------------------------------


def test_unpriced_model_has_a_clear_error():
    model = unpriced_model(enabled=True)

    assert validate_model_for_use(model) == (
        "Claude X has no price in the catalogue; ask staff to set it before using it."
    )


def test_output_price_alone_missing_is_still_unpriced():
    model = unpriced_model(enabled=True, input_price_per_mtok=Decimal("1"))

    assert "has no price in the catalogue" in validate_model_for_use(model)


def test_disabled_model_cannot_be_used():
    model = unpriced_model(input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("2"), enabled=False)

    assert validate_model_for_use(model) == "Claude X is disabled in the catalogue; choose another model."


def test_missing_model_asks_for_one():
    assert validate_model_for_use(None) == "Choose a model from the catalogue."


# --------------------------------------------------------------------------------------------------
# Admin
# --------------------------------------------------------------------------------------------------


def _add_form_data(**extra) -> dict:
    data = {
        "provider": "anthropic",
        "model_id": "claude-y",
        "display_name": "Claude Y",
        "context_window": "200000",
        "max_output_tokens": "8192",
        "input_price_per_mtok": "",
        "cached_input_price_per_mtok": "",
        "output_price_per_mtok": "",
        "credit_multiplier": "1.00",
        "enabled": "on",
        "sort_order": "100",
    }
    data.update(extra)
    return data


def test_admin_refuses_to_add_an_enabled_model_without_prices(admin_client):
    response = admin_client.post(reverse("admin:orchestration_llmmodel_add"), _add_form_data())

    assert response.status_code == 200
    assert "Claude Y has no price in the catalogue" in response.content.decode()
    assert not LLMModel.objects.filter(model_id="claude-y").exists()


def test_admin_adds_a_disabled_unpriced_model_or_a_priced_enabled_one(admin_client):
    url = reverse("admin:orchestration_llmmodel_add")

    disabled = _add_form_data(model_id="claude-draft")
    del disabled["enabled"]
    assert admin_client.post(url, disabled).status_code == 302
    priced = _add_form_data(input_price_per_mtok="0", output_price_per_mtok="0")
    assert admin_client.post(url, priced).status_code == 302

    assert LLMModel.objects.get(model_id="claude-draft").enabled is False
    assert LLMModel.objects.get(model_id="claude-y").enabled is True


def test_admin_change_form_refuses_enabling_an_unpriced_model(admin_client):
    model = unpriced_model()
    url = reverse("admin:orchestration_llmmodel_change", args=[model.pk])

    response = admin_client.post(
        url, _add_form_data(model_id=model.model_id, display_name="Claude X", output_price_per_mtok="15")
    )

    assert response.status_code == 200
    assert "Claude X has no price in the catalogue" in response.content.decode()
    model.refresh_from_db()
    assert model.enabled is False


def _changelist_row(model: LLMModel, **changes) -> dict:
    row = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(model.pk),
        "form-0-input_price_per_mtok": "" if model.input_price_per_mtok is None else str(model.input_price_per_mtok),
        "form-0-cached_input_price_per_mtok": "",
        "form-0-output_price_per_mtok": "" if model.output_price_per_mtok is None else str(model.output_price_per_mtok),
        "form-0-credit_multiplier": str(model.credit_multiplier),
        "_save": "Save",
    }
    if model.enabled:
        row["form-0-enabled"] = "on"
    row.update({f"form-0-{key}": value for key, value in changes.items()})
    return row


def test_admin_list_editing_refuses_enabling_an_unpriced_model(admin_client):
    model = unpriced_model()
    url = reverse("admin:orchestration_llmmodel_changelist") + "?q=claude-x-preview"

    response = admin_client.post(url, _changelist_row(model, enabled="on"))

    assert response.status_code == 200
    assert "Claude X has no price in the catalogue" in response.content.decode()
    model.refresh_from_db()
    assert model.enabled is False


def test_admin_list_editing_saves_prices_then_enables(admin_client):
    model = unpriced_model()
    url = reverse("admin:orchestration_llmmodel_changelist") + "?q=claude-x-preview"

    response = admin_client.post(
        url,
        _changelist_row(model, input_price_per_mtok="2.50", output_price_per_mtok="12.00", enabled="on"),
    )

    assert response.status_code == 302
    model.refresh_from_db()
    assert model.enabled is True
    assert model.input_price_per_mtok == Decimal("2.50")
    assert validate_model_for_use(model) is None


@pytest.fixture
def history(owner):
    model = LLMModel.objects.get(provider="demo", model_id="demo-writer")
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(
        project=project, title="Four-day week memo", brief="Write it.", status=Status.PAUSED, current_round=1
    )
    agent = Agent.objects.create(session=session, name="Writer", model=model, role_prompt="Write.")
    Criterion.objects.create(agent=agent, name="Clarity", weight=2)
    turn = Turn.objects.create(
        session=session,
        round=1,
        agent=agent,
        agent_name="Writer",
        status=Turn.TurnStatus.COMPLETED,
        scores={"Clarity": 8},
        overall_score=8,
        parse_tier="json",
    )
    DocumentVersion.objects.create(session=session, number=1, content="# Memo", turn=turn)
    SessionEvent.objects.create(session=session, seq=1, kind="status", payload={"status": "paused"})
    WritingSession.objects.filter(pk=session.pk).update(last_seq=1)
    session.refresh_from_db()
    TeamPreset.objects.create(slug="pair", name="Writer and editor", data={"agents": [{}, {}]})
    return session


@pytest.mark.parametrize(
    "model_name",
    ["llmmodel", "project", "writingsession", "agent", "turn", "documentversion", "sessionevent", "teampreset"],
)
def test_admin_changelists_render_for_a_superuser(admin_client, history, model_name):
    response = admin_client.get(reverse(f"admin:orchestration_{model_name}_changelist"))

    assert response.status_code == 200


def test_admin_session_list_shows_owner_round_and_agent_count(admin_client, history):
    response = admin_client.get(reverse("admin:orchestration_writingsession_changelist"))
    content = response.content.decode()

    assert "owner@example.com" in content
    assert "1 / 3" in content
    assert "Four-day week memo" in content


def test_admin_project_list_counts_sessions(admin_client, history):
    response = admin_client.get(reverse("admin:orchestration_project_changelist"))

    assert '<td class="field-session_count">1</td>' in response.content.decode()


@pytest.mark.parametrize(
    ("model_name", "getter"),
    [
        ("writingsession", lambda s: s),
        ("agent", lambda s: s.agents.get()),
        ("turn", lambda s: s.turns.get()),
        ("documentversion", lambda s: s.versions.get()),
        ("sessionevent", lambda s: s.events.get()),
    ],
)
def test_admin_detail_pages_render(admin_client, history, model_name, getter):
    obj = getter(history)

    response = admin_client.get(reverse(f"admin:orchestration_{model_name}_change", args=[obj.pk]))

    assert response.status_code == 200


def test_turns_and_events_are_read_only_in_the_admin(admin_client, history):
    turn = history.turns.get()

    response = admin_client.post(
        reverse("admin:orchestration_turn_change", args=[turn.pk]), {"overall_score": "10", "round": "1"}
    )

    assert response.status_code == 403
    turn.refresh_from_db()
    assert turn.overall_score == 8
    assert admin_client.get(reverse("admin:orchestration_sessionevent_add")).status_code == 403


def test_admin_stop_action_stops_the_session_through_the_service(admin_client, history):
    response = admin_client.post(
        reverse("admin:orchestration_writingsession_changelist"),
        {"action": "stop_sessions", "_selected_action": [str(history.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Stopped 1 session." in response.content.decode()
    history.refresh_from_db()
    assert history.status == Status.STOPPED
    # The owner reads that Atelier staff stopped it, and the session's admin history says who.
    assert history.stop_reason == "staff_stopped" and history.stop_detail == "Stopped by Atelier staff."
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.get(object_id=str(history.pk)).change_message.startswith("Stopped the run")


def test_admin_stop_action_reports_sessions_that_are_not_running(admin_client, history):
    WritingSession.objects.filter(pk=history.pk).update(status=Status.COMPLETED)

    response = admin_client.post(
        reverse("admin:orchestration_writingsession_changelist"),
        {"action": "stop_sessions", "_selected_action": [str(history.pk)]},
        follow=True,
    )

    assert "This session is not running." in response.content.decode()
    history.refresh_from_db()
    assert history.status == Status.COMPLETED
