"""Security review findings: each test is an attack or abuse a user could try, and what they should see."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration.models import Agent, Criterion, DocumentVersion, Project, Status, WritingSession
from tests.studio_fixtures import catalogue_model

HUGE = str(10**30)


@pytest.fixture
def session(owner, db):
    model = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(project=project, title="S", brief="Write.", status=Status.COMPLETED)
    agent = Agent.objects.create(session=session, name="Writer", model=model, role_prompt="Write.")
    Criterion.objects.create(agent=agent, name="Clarity", weight=1.0)
    DocumentVersion.objects.create(session=session, number=1, content="One.")
    DocumentVersion.objects.create(session=session, number=2, content="Two.")
    return session


# --- Out-of-range numbers: a clear 400/404, never a 500 ---------------------------------------------


@pytest.mark.parametrize("params", [{"a": HUGE, "b": "1"}, {"a": "1", "b": HUGE}])
def test_diff_with_an_out_of_range_version_number_is_a_clear_400(owner_client, session, params):
    response = owner_client.get(reverse("document_diff", args=[session.pk]), params)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        f"/sessions/{HUGE}/",
        f"/sessions/{HUGE}/edit/",
        f"/projects/{HUGE}/",
        "/sessions/{pk}/document/versions/" + HUGE + "/",
        "/sessions/{pk}/agents/" + HUGE + "/remove/",
    ],
)
def test_out_of_range_ids_in_urls_are_404(owner_client, session, path):
    url = path.format(pk=session.pk)
    assert owner_client.get(url).status_code in (404, 405)
    assert owner_client.post(url).status_code in (404, 405)


def test_agent_form_with_an_out_of_range_model_id_is_a_form_error(owner_client, owner, db):
    model = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="Write.")
    agent = Agent.objects.create(session=session, name="Writer", model=model, role_prompt="Write.")
    prefix = f"agent-{agent.pk}"
    data = {
        f"{prefix}-name": "Writer",
        f"{prefix}-role": "writer",
        f"{prefix}-model": HUGE,
        f"{prefix}-fallback_model": HUGE,
        f"{prefix}-role_prompt": "Write.",
        f"{prefix}-temperature": "0.5",
        f"{prefix}-max_output_tokens": "1024",
        f"{prefix}-criteria-TOTAL_FORMS": "0",
        f"{prefix}-criteria-INITIAL_FORMS": "0",
    }
    response = owner_client.post(
        reverse("agent_update", args=[session.pk, agent.pk]), data, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "Unknown model" in response.content.decode()
    agent.refresh_from_db()
    assert agent.model_id == model.pk


def test_settings_with_an_out_of_range_threshold_agent_is_a_form_error(owner_client, owner, db):
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="Write.")
    data = {"title": "S", "flow": "sequential", "brief": "Write.", "max_rounds": "2", "threshold_agent": HUGE}
    response = owner_client.post(reverse("session_edit", args=[session.pk]), data)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()


def test_preset_apply_with_an_out_of_range_preset_id_says_pick_a_preset(owner_client, owner, db):
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="Write.")
    response = owner_client.post(
        reverse("session_preset_apply", args=[session.pk]), {"preset": HUGE}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert "Pick a preset team." in response.content.decode()


# --- Plan limits cannot be side-stepped through an agent's fallback model ------------------------------


def test_a_free_user_cannot_start_a_team_whose_fallback_is_a_premium_model(owner, db):
    """A preset saved on a higher plan, a duplicate or a downgrade can leave a premium fallback behind."""
    from billing.gating import check

    demo = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    premium = catalogue_model("anthropic", "studio-opus", output="75", name="Studio Opus")
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="Write.", max_rounds=2)
    agent = Agent.objects.create(session=session, name="Writer", model=demo, role_prompt="Write.")
    assert check(owner, "start_session", session=session).allowed

    Agent.objects.filter(pk=agent.pk).update(fallback_model=premium)
    gate = check(owner, "start_session", session=session)
    assert not gate.allowed
    assert "Studio Opus" in gate.reason
    assert not check(owner, "continue_session", session=session, extra_rounds=1).allowed


# --- Comparing long documents is bounded (it ran for minutes before) ----------------------------------


class _FakeClock:
    """Each reading is 0.05 s later, so the matcher's one-second budget runs out after ~20 searches."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.05
        return self.now


@pytest.fixture
def counted_searches(monkeypatch):
    import difflib

    import orchestration.matching as matching

    monkeypatch.setattr(matching, "monotonic", _FakeClock())
    calls = {"n": 0}
    original = difflib.SequenceMatcher.find_longest_match

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(difflib.SequenceMatcher, "find_longest_match", counting)
    return calls


def _paragraphs(word: str, n: int = 600) -> str:
    # Every paragraph changes and the blank lines and most words repeat: difflib's cubic worst case.
    return "\n\n".join(f"| Row {i} | {word} | text here |" for i in range(n))


@pytest.mark.parametrize("mode", ["inline", "side"])
def test_diff_of_long_documents_stops_searching_after_its_budget_and_still_shows_changes(
    owner_client, session, counted_searches, mode
):
    DocumentVersion.objects.create(session=session, number=3, content=_paragraphs("original"))
    DocumentVersion.objects.create(session=session, number=4, content=_paragraphs("revised"))

    response = owner_client.get(reverse("document_diff", args=[session.pk]), {"a": 3, "b": 4, "mode": mode})

    assert response.status_code == 200
    body = response.content.decode()
    assert "<del>" in body and "<ins>" in body
    assert "revised" in body and "original" in body
    assert counted_searches["n"] < 200  # thousands of full-range searches before the budget existed


def test_recording_a_long_version_stays_bounded_and_reports_a_sane_change_ratio(session, counted_searches):
    from orchestration.versions import change_ratio, record_version

    record_version(session=session, content=_paragraphs("original"))
    version = record_version(session=session, content=_paragraphs("revised"))

    assert 0.0 < version.change_ratio <= 1.0
    assert counted_searches["n"] < 200
    assert change_ratio(_paragraphs("same"), _paragraphs("same")) == 0.0


def test_budgeted_matching_keeps_the_common_start_and_end_of_a_huge_document():
    from orchestration.matching import MAX_ITEMS, BoundedMatcher

    words = ["the"] * (MAX_ITEMS + 10)
    edited = words[:100] + ["changed"] + words[101:]
    matcher = BoundedMatcher(words, edited)
    assert matcher.get_opcodes() == [
        ("equal", 0, 100, 0, 100),
        ("replace", 100, 101, 100, 101),
        ("equal", 101, len(words), 101, len(words)),
    ]
