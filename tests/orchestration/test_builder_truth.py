"""The builder tells the truth (issue 14, items 1-6), through the views as htmx calls them.

The browser side of the same items is in tests/browser/test_builder_truth.py.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.urls import reverse

from orchestration.models import Criterion, DocumentVersion, Status, TeamPreset, WritingSession
from tests.studio_fixtures import *  # noqa: F403 - fixtures
from tests.studio_fixtures import agent_post_data, settings_post_data

HTMX = {"HTTP_HX_REQUEST": "true"}


def save_status(html: str) -> str:
    match = re.search(r'<span id="save-status"[^>]*hx-swap-oob="true"[^>]*>(.*?)</span>', html, re.S)
    return match.group(1).strip() if match else ""


# --- 1. The save status says what happened -------------------------------------------------------


def test_an_invalid_agent_value_replies_not_saved_and_names_the_field(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    url = reverse("agent_update", args=[draft.pk, editor.pk])
    bad = owner_client.post(url, agent_post_data(editor, temperature="5"), **HTMX).content.decode()
    status = save_status(bad)
    assert status.startswith("Not saved") and "Temperature" in status and "Editor" in status
    editor.refresh_from_db()
    assert editor.temperature != 5

    fixed = owner_client.post(url, {**agent_post_data(editor, temperature="0.4"), "had_errors": "1"}, **HTMX)
    assert save_status(fixed.content.decode()).startswith("Editor saved at")


def test_an_invalid_setting_replies_not_saved_and_names_the_field(owner_client, draft):
    url = reverse("session_edit", args=[draft.pk])
    bad = owner_client.post(url, settings_post_data(draft, max_rounds="0"), **HTMX).content.decode()
    status = save_status(bad)
    assert status.startswith("Not saved") and "Max rounds" in status
    ok = owner_client.post(url, {**settings_post_data(draft, max_rounds="3"), "had_errors": "1"}, **HTMX)
    assert save_status(ok.content.decode()).startswith("Draft saved at")


# --- 2. A new criterion row learns its id ------------------------------------------------------


def test_a_new_criterion_saved_twice_stays_one_criterion(owner_client, draft):
    editor = draft.agents.get(name="Editor")
    url = reverse("agent_update", args=[draft.pk, editor.pk])
    prefix = f"agent-{editor.pk}-criteria"
    data = agent_post_data(editor)
    data.update(
        {
            f"{prefix}-TOTAL_FORMS": "2",
            f"{prefix}-1-id": "",
            f"{prefix}-1-agent": str(editor.pk),
            f"{prefix}-1-name": "Tone",
            f"{prefix}-1-weight": "1.5",
            f"{prefix}-1-description": "",
        }
    )
    html = owner_client.post(url, data, **HTMX).content.decode()
    created = Criterion.objects.get(agent=editor, name="Tone")
    # The reply gives the row its id and counts it as an existing row, as the next autosave must post it.
    assert re.search(rf'name="{prefix}-1-id" value="{created.pk}"', html)
    assert re.search(rf'name="{prefix}-INITIAL_FORMS" value="2"', html)

    # The next edits of the same row (as the page now posts it) update it.
    data.update({f"{prefix}-INITIAL_FORMS": "2", f"{prefix}-1-id": str(created.pk)})
    for weight in ("2.5", "3"):
        data[f"{prefix}-1-weight"] = weight
        owner_client.post(url, data, **HTMX)
    assert list(editor.criteria.order_by("order", "pk").values_list("name", "weight")) == [
        ("Evidence", 2.0),
        ("Tone", 3.0),
    ]


# --- 3. Start uses what the page shows, or refuses and says which field ---------------------------


def test_start_refuses_while_an_agent_field_is_invalid_and_names_it(owner_client, draft, monkeypatch):
    from orchestration import services

    started = []
    monkeypatch.setattr(services, "start_session", lambda *, session, user: started.append(session.pk))
    editor = draft.agents.get(name="Editor")
    data = {**settings_post_data(draft, title="Renamed"), **agent_post_data(editor, **{"criteria-0-weight": "-1"})}
    response = owner_client.post(reverse("session_start", args=[draft.pk]), data, **HTMX)
    html = response.content.decode()
    assert started == []
    assert "Not started" in html and "Editor: fix criterion 1 weight" in html
    assert save_status(html).startswith("Not started")
    # The invalid card is shown with its error; its old weight was not used or overwritten.
    assert f'id="agent-card-{editor.pk}"' in html and 'hx-swap-oob="true"' in html
    assert editor.criteria.get().weight == 2.0
    draft.refresh_from_db()
    assert draft.status == Status.DRAFT and draft.title == "Renamed"  # the valid part is not lost


def test_start_saves_an_agent_value_the_autosave_has_not_sent_yet(owner_client, draft, monkeypatch):
    from orchestration import services

    seen = []
    monkeypatch.setattr(
        services,
        "start_session",
        lambda *, session, user: seen.append(session.agents.get(name="Editor").criteria.get().weight),
    )
    editor = draft.agents.get(name="Editor")
    data = {**settings_post_data(draft), **agent_post_data(editor, **{"criteria-0-weight": "4"})}
    response = owner_client.post(reverse("session_start", args=[draft.pk]), data, **HTMX)
    assert response["HX-Redirect"] == reverse("session_detail", args=[draft.pk])
    assert seen == [4.0]


# --- 4. Save team as preset ---------------------------------------------------------------------


def test_saving_a_preset_under_a_taken_name_asks_before_replacing(owner_client, owner, draft):
    url = reverse("session_preset_save", args=[draft.pk])
    owner_client.post(url, {"name": "Duo"}, **HTMX)
    first = TeamPreset.objects.get(owner=owner)
    draft.agents.filter(name="Editor").delete()

    html = owner_client.post(url, {"name": "duo"}, **HTMX).content.decode()
    assert "You already have a preset named “Duo”" in html and 'name="replace"' in html
    first.refresh_from_db()
    assert len(first.data["agents"]) == 2  # not overwritten

    html = owner_client.post(url, {"name": "duo", "replace": "on"}, **HTMX).content.decode()
    assert 'data-testid="preset-saved"' in html
    first.refresh_from_db()
    assert TeamPreset.objects.filter(owner=owner).count() == 1 and len(first.data["agents"]) == 1


def test_saving_a_preset_without_a_name_says_so(owner_client, owner, draft):
    html = owner_client.post(reverse("session_preset_save", args=[draft.pk]), {"name": "  "}, **HTMX)
    assert "Give the preset a name." in html.content.decode()
    assert not TeamPreset.objects.filter(owner=owner).exists()


# --- 5. After a run, the builder shows the starting document ------------------------------------


def test_after_a_run_the_builder_shows_the_starting_document_and_never_overwrites_the_working_one(owner_client, draft):
    DocumentVersion.objects.create(session=draft, number=1, content="My own opening.", note="Starting document")
    DocumentVersion.objects.create(session=draft, number=2, content="The team's latest text.")
    WritingSession.objects.filter(pk=draft.pk).update(status=Status.COMPLETED, document="The team's latest text.")
    draft.refresh_from_db()

    html = owner_client.get(reverse("session_edit", args=[draft.pk])).content.decode()
    starting = re.search(r'data-testid="starting-document".*?<textarea[^>]*readonly>(.*?)</textarea>', html, re.S)
    assert starting and starting.group(1).strip() == "My own opening."
    assert "The team&#x27;s latest text." not in html and "The team's latest text." not in html

    # A save from the builder leaves the working document alone, whatever a client posts.
    owner_client.post(
        reverse("session_edit", args=[draft.pk]), settings_post_data(draft, document="Overwrite!", title="T2"), **HTMX
    )
    draft.refresh_from_db()
    assert draft.title == "T2" and draft.document == "The team's latest text."

    # Duplicate copies the same starting document the builder showed.
    owner_client.post(reverse("session_duplicate", args=[draft.pk]))
    assert WritingSession.objects.get(title="Copy of T2").document == "My own opening."


# --- 6. Every id on the builder page is unique ----------------------------------------------------


@pytest.mark.parametrize("with_error", [False, True])
def test_every_id_on_the_builder_page_is_unique(owner_client, draft, with_error):
    if with_error:  # the page re-rendered with errors (no JavaScript) as well
        response = owner_client.post(reverse("session_edit", args=[draft.pk]), settings_post_data(draft, max_rounds=""))
    else:
        response = owner_client.get(reverse("session_edit", args=[draft.pk]))
    ids = Counter(re.findall(r'\sid="([^"]+)"', response.content.decode()))
    assert [name for name, count in ids.items() if count > 1] == []
    assert ids["id_title"] == 1
