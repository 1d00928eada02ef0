"""The builder tells the truth, in real Chromium against the real ASGI server (issue 14, items 1-4, 6, 14).

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_builder_truth.py
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import make_user
from tests.studio_fixtures import catalogue_model

PASSWORD = "correct horse battery staple"
EMAIL = "truth@example.com"


@pytest.fixture
def draft(live_app):
    """A draft from the shipped two-agent preset, owned by a logged-out user with EMAIL / PASSWORD."""
    from orchestration import presets
    from orchestration.models import Project, TeamPreset, WritingSession

    catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    presets.seed_presets()
    owner = make_user(EMAIL, password=PASSWORD)
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(project=project, title="Bike lanes", brief="Argue for bike lanes.")
    preset = TeamPreset.objects.get(name="Academic writer + critical editor", owner=None)
    presets.apply_preset(session=session, preset=preset, default_model=presets.default_model_for(owner))
    return session


def open_builder(page, live_app, login, session):
    login(page, live_app, EMAIL, PASSWORD)
    page.goto(f"{live_app.url}/sessions/{session.pk}/edit/")
    expect(page.get_by_test_id("agent-card")).to_have_count(2)


def card(page, index: int):
    return page.get_by_test_id("agent-card").nth(index)


def set_value(locator, value: str) -> None:
    locator.fill(value)
    locator.dispatch_event("change")


def test_the_save_status_says_not_saved_for_an_invalid_value_and_saved_once_fixed(page, live_app, login, draft):
    open_builder(page, live_app, login, draft)
    status = page.locator("#save-status")
    set_value(card(page, 0).locator("input[name$=-temperature]"), "5")
    expect(card(page, 0).locator(".errorlist")).to_contain_text("less than or equal to 2")
    expect(status).to_contain_text("Not saved")
    expect(status).to_contain_text("Temperature")
    expect(status).not_to_have_text(re.compile(r"^Saved"))

    set_value(card(page, 0).locator("input[name$=-temperature]"), "0.4")
    expect(card(page, 0).locator(".errorlist")).to_have_count(0)
    expect(status).to_contain_text("saved at")
    expect(status).not_to_contain_text("Not saved")

    # The same for the session settings.
    set_value(page.locator("#id_max_rounds"), "0")
    expect(status).to_contain_text("Not saved")
    expect(status).to_contain_text("Max rounds")
    set_value(page.locator("#id_max_rounds"), "3")
    expect(status).to_contain_text("Draft saved at")


def test_editing_a_new_criterion_saves_it_once(page, live_app, login, draft):
    from orchestration.models import Agent

    open_builder(page, live_app, login, draft)
    editor = card(page, 1)
    before = editor.get_by_test_id("criterion-row").count()
    editor.get_by_test_id("add-criterion").click()
    expect(card(page, 1).get_by_test_id("criterion-row")).to_have_count(before + 1)
    row = card(page, 1).get_by_test_id("criterion-row").last
    row.locator("input[name$=-name]").fill("Evidence check")
    set_value(row.locator("input[name$=-weight]"), "2")
    expect(page.locator("#save-status")).to_contain_text("saved at")
    for weight in ("3", "4"):
        row = card(page, 1).get_by_test_id("criterion-row").last
        set_value(row.locator("input[name$=-weight]"), weight)
        expect(page.locator("#save-status")).to_contain_text("saved at")
        page.wait_for_function(
            f"() => document.querySelector('#save-status').textContent.includes('saved at')"
            f" && [...document.querySelectorAll('[data-testid=agent-card]')][1]"
            f".querySelector('[data-testid=criterion-row]:last-of-type input[name$=-weight]').value === '{weight}'"
        )
    description = card(page, 1).get_by_test_id("criterion-row").last.locator("input[name$=-description]")
    set_value(description, "Claims are sourced")
    expect(page.locator("#save-status")).to_contain_text("saved at")
    page.wait_for_timeout(600)  # let a (wrong) extra autosave land if one were queued

    editor_agent = Agent.objects.get(session=draft, order=1)
    names = list(editor_agent.criteria.values_list("name", flat=True))
    assert names.count("Evidence check") == 1, names
    assert editor_agent.criteria.get(name="Evidence check").weight == 4.0
    page.reload()
    assert card(page, 1).get_by_test_id("criterion-row").count() == before + 1


def test_start_refuses_while_a_field_shows_an_error_and_says_which(page, live_app, login, draft):
    from orchestration.models import Agent, Status, WritingSession

    open_builder(page, live_app, login, draft)
    weight = card(page, 1).get_by_test_id("criterion-row").first.locator("input[name$=-weight]")
    set_value(weight, "-1")
    expect(card(page, 1).get_by_test_id("criterion-row").first.locator(".errorlist")).to_be_visible()

    # The criterion row keeps its layout with an error: inputs side by side, the error under its own input.
    row = card(page, 1).get_by_test_id("criterion-row").first
    name_box = row.locator("input[name$=-name]").bounding_box()
    weight_box = row.locator("input[name$=-weight]").bounding_box()
    error_box = row.locator(".errorlist").bounding_box()
    assert abs(name_box["y"] - weight_box["y"]) < 2, (name_box, weight_box)
    assert error_box["y"] >= weight_box["y"] + weight_box["height"] - 1
    assert error_box["x"] >= weight_box["x"] - 1

    page.get_by_test_id("start-session").click()
    problems = page.get_by_test_id("start-problems")
    expect(problems).to_contain_text("Not started")
    expect(problems).to_contain_text("Critical editor: fix criterion 1 weight")
    expect(page).to_have_url(re.compile(r".*/sessions/\d+/edit/$"))
    assert WritingSession.objects.get(pk=draft.pk).status == Status.DRAFT
    editor = Agent.objects.get(session=draft, order=1)
    old_weight = editor.criteria.order_by("order", "pk").first().weight

    # Fixed but not yet autosaved: Start uses the value on screen.
    weight = card(page, 1).get_by_test_id("criterion-row").first.locator("input[name$=-weight]")
    weight.fill("3.5")  # no change event: the autosave has not run
    page.get_by_test_id("start-session").click()
    expect(page).to_have_url(re.compile(r".*/sessions/\d+/$"), timeout=15_000)
    assert editor.criteria.order_by("order", "pk").first().weight == 3.5 != old_weight
    page.goto(live_app.url + "/dashboard/")


def test_save_team_as_preset_says_what_is_wrong(page, live_app, login, draft):
    from orchestration.models import TeamPreset

    open_builder(page, live_app, login, draft)
    form = page.get_by_test_id("preset-save-form")
    form.get_by_test_id("save-preset").click()
    expect(page.locator("#preset-save")).to_contain_text("Give the preset a name.")

    page.locator("#preset-save input[name=name]").fill("Duo")
    page.get_by_test_id("save-preset").click()
    expect(page.get_by_test_id("preset-saved")).to_be_visible()
    page.locator("#preset-save input[name=name]").fill("duo")
    page.get_by_test_id("save-preset").click()
    expect(page.locator("#preset-save")).to_contain_text("You already have a preset named “Duo”")
    assert TeamPreset.objects.filter(owner__email=EMAIL).count() == 1
    page.locator("#preset-save input[name=replace]").check()
    page.get_by_test_id("save-preset").click()
    expect(page.get_by_test_id("preset-saved")).to_be_visible()
    assert TeamPreset.objects.filter(owner__email=EMAIL).count() == 1


def test_the_builder_fits_a_phone_and_a_resized_textarea_trips_no_csp_on_swaps(page, live_app, login, draft):
    # A user-resized textarea carries a style attribute; htmx must not copy it onto the swapped-in
    # element (setAttribute("style") is inline style under the CSP). The page fixture fails on any CSP error.
    open_builder(page, live_app, login, draft)
    page.locator("#id_brief").evaluate("el => { el.style.height = '220px'; }")
    card(page, 0).locator("textarea[name$=-role_prompt]").evaluate("el => { el.style.height = '180px'; }")
    set_value(page.locator("#id_max_rounds"), "0")
    expect(page.locator("#save-status")).to_contain_text("Not saved")
    set_value(page.locator("#id_max_rounds"), "2")
    expect(page.locator("#save-status")).to_contain_text("Draft saved at")
    set_value(card(page, 0).locator("input[name$=-temperature]"), "5")
    expect(page.locator("#save-status")).to_contain_text("Not saved")
    set_value(card(page, 0).locator("input[name$=-temperature]"), "1")
    expect(page.locator("#save-status")).to_contain_text("saved at")

    # 390 px wide: nothing sticks out sideways, an unbroken long name included.
    long_name = "N" * 80
    page.set_viewport_size({"width": 390, "height": 844})
    set_value(page.locator("#id_title"), long_name)
    expect(page.locator("#save-status")).to_contain_text("Draft saved at")
    set_value(card(page, 1).locator("input[name$=-name]").first, long_name)
    expect(page.locator("#save-status")).to_contain_text("saved at")
    page.reload()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    wide = page.evaluate(
        """() => [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 391)
          .map((e) => `${e.tagName}#${e.id}.${e.className}`).slice(0, 10)"""
    )
    assert width <= 390, f"the builder is {width}px wide on a 390px screen: {wide}"
    expect(page.get_by_test_id("start-session")).to_be_visible()
