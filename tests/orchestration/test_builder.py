"""The session builder: htmx partials for the team, inline validation, uploads, duplicate, start."""

from __future__ import annotations

import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from orchestration.models import Agent, Criterion, ReferenceDocument, Status, TeamPreset, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures
from tests.studio_fixtures import agent_post_data, settings_post_data

HTMX = {"HTTP_HX_REQUEST": "true"}


def _names(session: WritingSession) -> list[str]:
    return list(session.agents.order_by("order", "pk").values_list("name", flat=True))


@pytest.fixture
def starter(owner):
    """The owner on the Starter plan (more agents than Free)."""
    from billing import services

    account = services.get_account(owner)
    account.plan = "starter"
    account.save()
    return owner


# --- pages


def test_create_a_session_from_the_shipped_preset(owner_client, project, shipped_presets):
    preset = shipped_presets.get(slug="academic-writer-critical-editor")
    response = owner_client.post(
        reverse("session_create", args=[project.pk]), {"title": "Literature review", "preset": preset.pk}
    )
    session = WritingSession.objects.get(title="Literature review")
    assert response.url == reverse("session_edit", args=[session.pk])
    assert _names(session) == ["Academic writer", "Critical editor"]
    assert session.threshold_agent.name == "Critical editor"


def test_create_a_blank_session(owner_client, project, demo_llm):
    owner_client.post(reverse("session_create", args=[project.pk]), {"title": "Blank", "preset": ""})
    assert WritingSession.objects.get(title="Blank").agents.count() == 0


def test_builder_page_shows_models_with_prices_and_multipliers_only_if_enabled(
    owner_client, draft, disabled_llm, premium_llm, settings
):
    # Providers connected on this server, so what is shown is the plan's lock (test_model_availability
    # covers models whose provider is not connected).
    settings.PROVIDERS = {**settings.PROVIDERS, "anthropic": {"api_key": "k"}, "openai": {"api_key": "k"}}
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    assert "Studio Mini · $0.12 in / $0.60 out per Mtok · 2 credits per 1k in + 1k out (×1.5)" in html
    assert "Studio Retired" not in html
    # Not on the Free plan: visible, but disabled with an upgrade prompt.
    assert "Studio Opus" in html and "locked:" in html and "Upgrade" in html
    assert 'data-testid="estimate"' in html and "credits" in html


def test_running_sessions_are_not_editable(owner_client, draft):
    draft.status = Status.RUNNING
    draft.save()
    response = owner_client.get(reverse("session_edit", args=[draft.pk]))
    assert response.status_code == 302 and response.url == reverse("session_detail", args=[draft.pk])
    response = owner_client.post(reverse("agent_add", args=[draft.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("session_detail", args=[draft.pk])
    assert draft.agents.count() == 2


# --- settings and termination


def test_settings_save_over_htmx_updates_status_without_swapping_the_form(owner_client, draft):
    data = settings_post_data(
        draft,
        title="Bike lanes, revised",
        max_rounds="3",
        score_threshold="8",
        threshold_agent=str(draft.agents.get(name="Editor").pk),
        convergence_percent="5",
        credit_budget="300",
    )
    response = owner_client.post(reverse("session_edit", args=[draft.pk]), data, **HTMX)
    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert "Draft saved" in response.content.decode()
    assert "builder-changed" in response["HX-Trigger-After-Swap"]
    draft.refresh_from_db()
    assert (draft.title, draft.max_rounds, draft.score_threshold) == ("Bike lanes, revised", 3, 8.0)
    assert draft.threshold_agent.name == "Editor"
    assert (draft.convergence_percent, draft.credit_budget) == (5.0, 300)


def test_bad_termination_values_rerender_the_settings_with_errors(owner_client, draft):
    data = settings_post_data(draft, max_rounds="0", score_threshold="11")
    response = owner_client.post(reverse("session_edit", args=[draft.pk]), data, **HTMX)
    html = response.content.decode()
    assert response["HX-Retarget"] == "#settings"
    assert 'id="settings"' in html and "errorlist" in html
    assert "less than or equal to 10" in html and "greater than or equal to 1" in html
    draft.refresh_from_db()
    assert draft.max_rounds == 3


def test_threshold_agent_from_another_session_is_refused(owner_client, draft, project, demo_llm):
    other = WritingSession.objects.create(project=project, title="Other", brief="b")
    stranger = Agent.objects.create(session=other, name="Stranger", model=demo_llm, role_prompt="x")
    data = settings_post_data(draft, threshold_agent=str(stranger.pk))
    response = owner_client.post(reverse("session_edit", args=[draft.pk]), data, **HTMX)
    assert "Select a valid choice" in response.content.decode()


def test_a_flow_not_on_the_plan_is_refused(owner_client, draft, monkeypatch):
    from orchestration import forms

    class Denied:
        allowed, reason, upgrade_url = False, "The Free plan does not include this flow.", "/pricing/"

    monkeypatch.setattr(
        forms, "gate", lambda user, action, **ctx: Denied() if action == "use_flow" else forms._OpenGate()
    )
    response = owner_client.post(reverse("session_edit", args=[draft.pk]), settings_post_data(draft), **HTMX)
    assert "The Free plan does not include this flow." in response.content.decode()


# --- agents


def test_add_agent_returns_the_team_partial_with_the_users_default_model(
    owner_client, owner, draft, cheap_llm, starter, shipped_presets
):
    from accounts.models import Profile

    Profile.objects.update_or_create(user=owner, defaults={"default_model": cheap_llm})
    response = owner_client.post(reverse("agent_add", args=[draft.pk]), **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="team"' in html and "<html" not in html
    assert html.count('data-testid="agent-card"') == 3
    new = draft.agents.order_by("-order").first()
    assert new.name == "Agent 3" and new.model == cheap_llm and new.criteria.count() == 1
    assert "Academic writer + critical editor" in html  # the preset picker survives the re-render


def test_new_agents_default_to_the_demo_model_without_a_preference(owner_client, draft, demo_llm, starter):
    owner_client.post(reverse("agent_add", args=[draft.pk]), **HTMX)
    assert draft.agents.order_by("-order").first().model == demo_llm


def test_free_plan_cannot_add_a_third_agent(owner_client, draft):
    response = owner_client.post(reverse("agent_add", args=[draft.pk]), **HTMX)
    assert "allows up to 2 agents" in response.content.decode()
    assert draft.agents.count() == 2


def test_reorder_agents_with_up_and_down(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    response = owner_client.post(reverse("agent_move", args=[draft.pk, editor.pk]), {"direction": "up"}, **HTMX)
    assert _names(draft) == ["Editor", "Writer"]
    html = response.content.decode()
    # The cards, not the preset picker (whose options also name writers and editors).
    assert html.index('<h3 class="agent-title">Editor') < html.index('<h3 class="agent-title">Writer')
    owner_client.post(reverse("agent_move", args=[draft.pk, editor.pk]), {"direction": "down"}, **HTMX)
    assert _names(draft) == ["Writer", "Editor"]
    # Moving the last agent further down changes nothing.
    owner_client.post(reverse("agent_move", args=[draft.pk, editor.pk]), {"direction": "down"}, **HTMX)
    assert _names(draft) == ["Writer", "Editor"]


def test_remove_agent(owner_client, draft):
    writer = draft.agents.get(name="Writer")
    response = owner_client.post(reverse("agent_remove", args=[draft.pk, writer.pk]), **HTMX)
    assert _names(draft) == ["Editor"]
    assert response.content.decode().count('data-testid="agent-card"') == 1
    assert not Criterion.objects.filter(agent_id=writer.pk).exists()


def test_agent_edit_saves_fields_and_criteria(owner_client, draft, demo_llm):
    editor = draft.agents.get(name="Editor")
    data = agent_post_data(
        editor,
        name="Tough editor",
        temperature="0.2",
        max_output_tokens="1024",
        fallback_model=str(demo_llm.pk),
        **{f"agent-{editor.pk}-criteria-0-weight": "3"},
    )
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    assert response["HX-Reswap"] == "none"
    assert "Tough editor saved" in response.content.decode()
    editor.refresh_from_db()
    assert (editor.name, editor.temperature, editor.max_output_tokens) == ("Tough editor", 0.2, 1024)
    assert editor.fallback_model == demo_llm
    assert editor.criteria.get().weight == 3


def test_add_and_remove_criteria_rows(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    url = reverse("agent_update", args=[draft.pk, editor.pk])
    response = owner_client.post(url, {**agent_post_data(editor), "action": "add_criterion"}, **HTMX)
    html = response.content.decode()
    assert html.count('data-testid="criterion-row"') == 2
    assert f'id="agent-card-{editor.pk}"' in html and "<html" not in html

    p = f"agent-{editor.pk}-criteria"
    data = {
        **agent_post_data(editor),
        f"{p}-TOTAL_FORMS": "2",
        f"{p}-1-name": "Structure",
        f"{p}-1-weight": "1.5",
        f"{p}-1-description": "",
        f"{p}-1-agent": str(editor.pk),
    }
    owner_client.post(url, data, **HTMX)
    assert list(editor.criteria.values_list("name", "weight")) == [("Evidence", 2.0), ("Structure", 1.5)]

    editor.refresh_from_db()
    response = owner_client.post(url, {**agent_post_data(editor), "action": "remove_criterion-0"}, **HTMX)
    assert list(editor.criteria.values_list("name", flat=True)) == ["Structure"]
    assert response.content.decode().count('data-testid="criterion-row"') == 1


def test_a_blank_extra_criterion_row_is_ignored(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    p = f"agent-{editor.pk}-criteria"
    # What the browser sends for the untouched row added by "+ Add criterion" (weight keeps its default).
    data = {**agent_post_data(editor), f"{p}-TOTAL_FORMS": "2", f"{p}-1-name": "", f"{p}-1-weight": "1.0"}
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    assert response["HX-Reswap"] == "none"
    assert editor.criteria.count() == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", "5", "less than or equal to 2"),
        ("temperature", "warm", "Enter a number"),
        ("max_output_tokens", "10", "greater than or equal to 64"),
        ("model", "999999", "Unknown model"),
        ("name", "", "This field is required"),
    ],
)
def test_agent_validation_errors_rerender_the_card(owner_client, draft, field, value, message):
    editor = draft.agents.get(name="Editor")
    data = agent_post_data(editor, **{field: value})
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    html = response.content.decode()
    assert response["HX-Retarget"] == f"#agent-card-{editor.pk}"
    assert message in html
    assert 'data-testid="agent-card"' in html
    editor.refresh_from_db()
    assert editor.name == "Editor" and editor.temperature == 0.7


def test_criterion_without_a_weight_is_an_error(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    data = agent_post_data(editor, **{f"agent-{editor.pk}-criteria-0-weight": ""})
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    assert "Give this criterion a weight." in response.content.decode()
    assert editor.criteria.get().weight == 2.0


def test_a_disabled_model_is_refused(owner_client, draft, disabled_llm):
    editor = draft.agents.get(name="Editor")
    data = agent_post_data(editor, model=str(disabled_llm.pk))
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    assert "Studio Retired is disabled" in response.content.decode()
    editor.refresh_from_db()
    assert editor.model.model_id == "studio-mini"


def test_a_model_not_on_the_plan_is_refused(owner_client, draft, premium_llm):
    editor = draft.agents.get(name="Editor")
    data = agent_post_data(editor, model=str(premium_llm.pk))
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), data, **HTMX)
    html = response.content.decode()
    assert "The Free plan does not include" in html
    editor.refresh_from_db()
    assert editor.model.model_id == "studio-mini"


def test_an_agent_of_another_session_is_404_even_for_its_owner(owner_client, draft, project, demo_llm):
    other = WritingSession.objects.create(project=project, title="Other", brief="b")
    foreign = Agent.objects.create(session=other, name="Foreign", model=demo_llm, role_prompt="x")
    response = owner_client.post(reverse("agent_remove", args=[draft.pk, foreign.pk]), **HTMX)
    assert response.status_code == 404
    assert Agent.objects.filter(pk=foreign.pk).exists()


# --- references


def _docx_bytes(*paragraphs: str, heading: str = "") -> bytes:
    import docx

    document = docx.Document()
    if heading:
        document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _upload(client, session, *files, **data):
    return client.post(reverse("reference_add", args=[session.pk]), {"files": list(files), **data}, **HTMX)


def test_paste_a_reference(owner_client, draft):
    response = _upload(owner_client, draft, title="Survey", content="Cyclists in Copenhagen ...")
    assert "Added 1 reference document" in response.content.decode()
    ref = draft.references.get()
    assert (ref.title, ref.content, ref.source_filename) == ("Survey", "Cyclists in Copenhagen ...", "")


def test_upload_md_txt_and_docx(owner_client, draft):
    md = SimpleUploadedFile("notes.md", b"# Notes\n\nBike lanes reduce injuries.", content_type="text/markdown")
    txt = SimpleUploadedFile("data.txt", "Caf\u00e9 counts: 42".encode(), content_type="text/plain")
    docx_file = SimpleUploadedFile(
        "paper.docx", _docx_bytes("Protected lanes work.", heading="Findings"), content_type="application/octet-stream"
    )
    response = _upload(owner_client, draft, md, txt, docx_file)
    html = response.content.decode()
    assert "Added 3 reference documents" in html and 'data-testid="upload-errors"' not in html
    refs = {r.source_filename: r for r in draft.references.all()}
    assert "Bike lanes reduce injuries." in refs["notes.md"].content
    assert refs["data.txt"].content == "Café counts: 42"
    assert refs["paper.docx"].content == "# Findings\n\nProtected lanes work."
    assert refs["paper.docx"].title == "paper"


def test_a_fake_docx_is_refused_clearly_and_the_rest_is_kept(owner_client, draft):
    fake = SimpleUploadedFile("evil.docx", os.urandom(2048))
    good = SimpleUploadedFile("ok.txt", b"fine")
    response = _upload(owner_client, draft, fake, good, title="Pasted", content="Pasted text")
    html = response.content.decode()
    assert "“evil.docx” is not a valid .docx file" in html
    assert sorted(draft.references.values_list("title", flat=True)) == ["Pasted", "ok"]


def test_a_zip_that_is_not_a_docx_is_refused(owner_client, draft):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a document")
    response = _upload(owner_client, draft, SimpleUploadedFile("fake.docx", buffer.getvalue()))
    assert "“fake.docx” is not a valid .docx file" in response.content.decode()
    assert not draft.references.exists()


def test_oversized_and_unsupported_files_are_refused_clearly(owner_client, draft):
    big = SimpleUploadedFile("huge.txt", b"a" * (1024 * 1024 + 1))
    pdf = SimpleUploadedFile("paper.pdf", b"%PDF-1.4")
    html = _upload(owner_client, draft, big, pdf).content.decode()
    assert "“huge.txt” is 1.0 MB; the limit is 1.0 MB per file." in html
    assert "“paper.pdf” is not a supported file type. Upload .md, .txt or .docx files." in html
    assert not draft.references.exists()


def test_too_many_files_at_once_are_refused(owner_client, draft):
    files = [SimpleUploadedFile(f"n{i}.txt", b"x") for i in range(11)]
    html = _upload(owner_client, draft, *files).content.decode()
    assert "Upload at most 10 files at a time" in html
    assert not draft.references.exists()


def test_remove_a_reference(owner_client, draft):
    ref = ReferenceDocument.objects.create(session=draft, title="Old", content="c")
    owner_client.post(reverse("reference_remove", args=[draft.pk, ref.pk]), **HTMX)
    assert not draft.references.exists()


# --- estimate, duplicate, presets, start


def test_credit_estimate_is_a_range(owner_client, draft):
    html = owner_client.get(reverse("session_estimate", args=[draft.pk]), **HTMX).content.decode()
    assert 'id="estimate"' in html and "<html" not in html
    from billing.pricing import estimate_session_credits

    low, high = estimate_session_credits(draft)
    assert 0 < low < high
    assert f"{low}–{high} credits" in html


def test_duplicate_session_copies_everything_into_a_new_draft(owner_client, draft):
    draft.document = "Starting text"
    draft.score_threshold = 7.5
    draft.threshold_agent = draft.agents.get(name="Editor")
    draft.credit_budget = 100
    draft.save()
    ReferenceDocument.objects.create(session=draft, title="Ref", content="Ref text", source_filename="r.md")
    response = owner_client.post(reverse("session_duplicate", args=[draft.pk]))
    copy = WritingSession.objects.exclude(pk=draft.pk).get()
    assert response.url == reverse("session_edit", args=[copy.pk])
    assert copy.title == "Copy of On bike lanes" and copy.status == Status.DRAFT
    assert (copy.brief, copy.document, copy.score_threshold, copy.credit_budget) == (
        draft.brief,
        "Starting text",
        7.5,
        100,
    )
    assert _names(copy) == ["Writer", "Editor"]
    assert copy.threshold_agent.session_id == copy.pk and copy.threshold_agent.name == "Editor"
    assert list(copy.agents.get(name="Editor").criteria.values_list("name", "weight")) == [("Evidence", 2.0)]
    assert copy.references.get().content == "Ref text"
    assert draft.agents.count() == 2  # the original is untouched


def test_save_team_as_a_personal_preset_and_reuse_it(owner_client, owner, draft, project):
    response = owner_client.post(reverse("session_preset_save", args=[draft.pk]), {"name": "My duo"}, **HTMX)
    assert 'data-testid="preset-saved"' in response.content.decode()
    preset = TeamPreset.objects.get(owner=owner)
    assert preset.name == "My duo" and len(preset.data["agents"]) == 2

    response = owner_client.post(reverse("session_create", args=[project.pk]), {"title": "Reuse", "preset": preset.pk})
    reused = WritingSession.objects.get(title="Reuse")
    assert _names(reused) == ["Writer", "Editor"]
    assert reused.agents.get(name="Editor").model.model_id == "studio-mini"


def test_another_users_preset_cannot_be_applied(client, outsider, owner, draft, demo_llm):
    from orchestration.presets import save_team_as_preset

    preset = save_team_as_preset(session=draft, user=owner, name="Private")
    client.force_login(outsider)
    from orchestration.models import Project

    theirs = WritingSession.objects.create(
        project=Project.objects.create(owner=outsider, name="Theirs"), title="T", brief="b"
    )
    response = client.post(reverse("session_preset_apply", args=[theirs.pk]), {"preset": preset.pk}, **HTMX)
    assert "Pick a preset team." in response.content.decode()
    assert theirs.agents.count() == 0


def test_apply_preset_and_start_blank_from_the_builder(owner_client, draft, shipped_presets):
    url = reverse("session_preset_apply", args=[draft.pk])
    response = owner_client.post(
        url, {"preset": shipped_presets.get(slug="academic-writer-critical-editor").pk}, **HTMX
    )
    assert 'id="builder"' in response.content.decode()
    assert _names(draft) == ["Academic writer", "Critical editor"]
    owner_client.post(url, {"preset": "blank"}, **HTMX)
    assert draft.agents.count() == 0


def test_start_shows_the_engines_refusal(owner_client, draft):
    services = pytest.importorskip("orchestration.services")
    pytest.importorskip("orchestration.catalogue")
    response = owner_client.post(
        reverse("session_start", args=[draft.pk]), settings_post_data(draft, brief="  "), **HTMX
    )
    html = response.content.decode()
    assert response["HX-Retarget"] == "#start-problems"
    assert "Write a brief" in html
    draft.refresh_from_db()
    assert draft.status == Status.DRAFT
    assert services  # the module under test


def test_start_redirects_to_the_live_page(owner_client, draft, monkeypatch):
    from orchestration import services

    started = []
    monkeypatch.setattr(services, "start_session", lambda *, session, user: started.append((session.pk, user.pk)))
    response = owner_client.post(
        reverse("session_start", args=[draft.pk]), settings_post_data(draft, title="Go"), **HTMX
    )
    assert response["HX-Redirect"] == reverse("session_detail", args=[draft.pk])
    assert started == [(draft.pk, draft.project.owner_id)]
    draft.refresh_from_db()
    assert draft.title == "Go"  # the settings on screen were saved first


def test_fixing_an_invalid_agent_rerenders_the_card_without_the_old_errors(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    url = reverse("agent_update", args=[draft.pk, editor.pk])
    bad = owner_client.post(url, agent_post_data(editor, temperature="9"), **HTMX).content.decode()
    assert 'name="had_errors"' in bad
    fixed = owner_client.post(url, {**agent_post_data(editor, temperature="1.1"), "had_errors": "1"}, **HTMX)
    assert fixed.get("HX-Reswap") != "none"
    assert "errorlist" not in fixed.content.decode()
    editor.refresh_from_db()
    assert editor.temperature == 1.1


def test_fixing_invalid_settings_rerenders_them_and_says_saved(owner_client, draft):
    url = reverse("session_edit", args=[draft.pk])
    owner_client.post(url, settings_post_data(draft, max_rounds="0"), **HTMX)
    response = owner_client.post(url, {**settings_post_data(draft, max_rounds="2"), "had_errors": "1"}, **HTMX)
    html = response.content.decode()
    assert 'id="settings"' in html and "errorlist" not in html and "Draft saved" in html


def test_an_agent_on_a_since_disabled_model_keeps_it_visible_and_is_told_to_change(owner_client, draft, cheap_llm):
    cheap_llm.enabled = False
    cheap_llm.save()
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    assert f'<option value="{cheap_llm.pk}" selected>Studio Mini · disabled</option>' in html
    editor = draft.agents.get(name="Editor")
    response = owner_client.post(reverse("agent_update", args=[draft.pk, editor.pk]), agent_post_data(editor), **HTMX)
    assert "Studio Mini is disabled. Pick another model." in response.content.decode()


def test_an_agent_on_a_model_above_the_plan_keeps_it_selected_not_silently_swapped(owner_client, draft, premium_llm):
    editor = draft.agents.get(name="Editor")
    editor.model = premium_llm  # e.g. picked on a paid plan before a downgrade
    editor.save()
    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    assert f'<option value="{premium_llm.pk}" selected>' in html


def test_agent_form_without_javascript_saves_and_reports_errors(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    url = reverse("agent_update", args=[draft.pk, editor.pk])
    response = owner_client.post(url, agent_post_data(editor, temperature="9"), follow=True)
    assert (
        "Editor was not saved. Temperature: Ensure this value is less than or equal to 2" in response.content.decode()
    )
    response = owner_client.post(url, agent_post_data(editor, name="Sharp editor"))
    assert response.status_code == 302
    editor.refresh_from_db()
    assert editor.name == "Sharp editor"


def test_a_plan_refusal_at_start_offers_an_upgrade(owner_client, draft, monkeypatch):
    from orchestration import services

    def refuse(*, session, user):
        raise services.ServiceError("The Free plan allows 1 run at a time.", upgrade_url="/billing/pricing/")

    monkeypatch.setattr(services, "start_session", refuse)
    response = owner_client.post(reverse("session_start", args=[draft.pk]), settings_post_data(draft), **HTMX)
    html = response.content.decode()
    assert "The Free plan allows 1 run at a time." in html and 'href="/billing/pricing/"' in html


def test_an_autosave_that_fires_after_start_is_answered_quietly(owner_client, draft):
    # Start saved the same form first; the debounced autosave that lands afterwards changes nothing.
    draft.status = Status.RUNNING
    draft.save()
    response = owner_client.post(
        reverse("session_edit", args=[draft.pk]), settings_post_data(draft, title="Late"), **HTMX
    )
    assert response.status_code == 204
    draft.refresh_from_db()
    assert draft.title != "Late"
    assert not list(response.wsgi_request._messages)  # no stray "this session is running" flash
