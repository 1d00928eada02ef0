"""Sessions through the API: a whole team in one request, presets, the builder's validation and plan
gates, updates while not running, run controls, turns, documents, the catalogue and usage."""

from __future__ import annotations

import pytest

from api.models import IdempotencyRecord
from billing.models import CreditAccount
from orchestration import engine
from orchestration.models import Agent, Criterion, Status, WritingSession
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def two_agents(model: str = "demo:demo-writer") -> list[dict]:
    return [
        {
            "name": "Writer",
            "role": "writer",
            "model": model,
            "role_prompt": "Write the piece.",
            "criteria": [{"name": "Clarity", "weight": 1.0}],
        },
        {
            "name": "Editor",
            "role": "editor",
            "model": model,
            "role_prompt": "Tighten it.",
            "temperature": 0.3,
            "criteria": [{"name": "Evidence", "weight": 2.0, "description": "Claims are backed."}],
        },
    ]


def new_session(api, project, **overrides):
    body = {
        "project_id": project.pk,
        "title": "Bike lanes",
        "brief": "Argue for protected bike lanes.",
        "max_rounds": 2,
        "agents": two_agents(),
        **overrides,
    }
    return api.post("sessions", body)


def test_a_whole_team_in_one_request(api, project, demo_llm):
    response = new_session(api, project, threshold_agent_index=1, score_threshold=8.5)
    assert response.status_code == 201, response.content
    body = response.json()
    session = WritingSession.objects.get(pk=body["id"])
    assert (session.title, session.status, session.max_rounds) == ("Bike lanes", Status.DRAFT, 2)
    agents = list(session.agents.order_by("order"))
    assert [a.name for a in agents] == ["Writer", "Editor"] and agents[1].temperature == 0.3
    assert session.threshold_agent == agents[1] and session.score_threshold == 8.5
    assert list(Criterion.objects.filter(agent=agents[1]).values_list("name", "weight")) == [("Evidence", 2.0)]
    assert [a["model"] for a in body["agents"]] == ["demo:demo-writer"] * 2
    assert body["agents"][1]["criteria"][0]["description"] == "Claims are backed."


def test_an_invalid_agent_names_its_field_and_creates_nothing(api, project, demo_llm):
    agents = two_agents()
    agents[1]["temperature"] = 7
    agents[0]["criteria"][0]["weight"] = 0
    body = assert_error(new_session(api, project, agents=agents), 422, "validation_error")
    assert body["errors"][0]["field"] == "agents.0.criteria.0.weight"  # the first problem, by position
    assert not WritingSession.objects.exists() and not Agent.objects.exists()
    agents = two_agents(model="nobody:nothing")
    body = assert_error(new_session(api, project, agents=agents), 422)
    assert body["errors"][0]["field"] == "agents.0.model"
    assert not WritingSession.objects.exists()


def test_plan_gates_match_the_builder(api, project, demo_llm, premium_llm, owner):
    # A premium model on Free: the builder's own message, as a field error.
    agents = two_agents(model=f"{premium_llm.provider}:{premium_llm.model_id}")
    body = assert_error(new_session(api, project, agents=agents), 422)
    assert body["errors"][0]["field"] == "agents.0.model" and "plan" in body["errors"][0]["message"].lower()
    # A third agent on Free (two allowed): 402 with the upgrade reason.
    three = two_agents() + [two_agents()[1]]
    body = assert_error(new_session(api, project, agents=three), 402, "plan_limit")
    assert "Upgrade" in body["message"] and body["upgrade_url"]
    # A flow the plan does not include.
    body = assert_error(new_session(api, project, flow="roundtable"), 422)
    assert body["errors"][0]["field"] == "flow"
    assert not WritingSession.objects.exists()


def test_from_a_preset_by_slug(api, project, shipped_presets):
    response = api.post(
        "sessions",
        {"project_id": project.pk, "title": "Essay", "brief": "B", "preset": "academic-writer-critical-editor"},
    )
    assert response.status_code == 201, response.content
    assert [a["name"] for a in response.json()["agents"]] == ["Academic writer", "Critical editor"]
    assert_error(api.post("sessions", {"project_id": project.pk, "title": "X", "preset": "nope"}), 422)
    presets = api.get("presets").json()
    editorial = next(p for p in presets if p["flow"] == "editorial")
    assert editorial["allowed"] is False and "Upgrade" in editorial["reason"]


def test_another_users_project_session_and_ids_are_404(api, outsider_api, project, demo_llm):
    sid = new_session(api, project).json()["id"]
    assert_error(new_session(outsider_api, project), 404)
    for method, path in [
        ("GET", f"sessions/{sid}"),
        ("PATCH", f"sessions/{sid}"),
        ("DELETE", f"sessions/{sid}"),
        ("POST", f"sessions/{sid}/start"),
        ("POST", f"sessions/{sid}/pause"),
        ("POST", f"sessions/{sid}/resume"),
        ("POST", f"sessions/{sid}/stop"),
        ("GET", f"sessions/{sid}/turns"),
        ("GET", f"sessions/{sid}/document"),
        ("GET", f"sessions/{sid}/versions"),
        ("GET", f"sessions/{sid}/export"),
    ]:
        assert_error(outsider_api.request(method, path, {} if method in ("PATCH", "POST") else None), 404)
    assert_error(outsider_api.post(f"sessions/{sid}/continue", {"rounds": 1}), 404)
    assert outsider_api.get("sessions").json()["count"] == 0
    assert WritingSession.objects.get(pk=sid).status == Status.DRAFT


def test_list_filters(api, project, demo_llm, owner):
    from orchestration.models import Project

    other = Project.objects.create(owner=owner, name="Other")
    first = new_session(api, project, title="Alpha essay").json()["id"]
    new_session(api, other, title="Beta memo")
    WritingSession.objects.filter(pk=first).update(status=Status.COMPLETED)
    assert api.get("sessions").json()["count"] == 2
    assert [s["id"] for s in api.get("sessions", project_id=project.pk).json()["items"]] == [first]
    assert [s["id"] for s in api.get("sessions", status="completed").json()["items"]] == [first]
    assert api.get("sessions", q="memo").json()["items"][0]["title"] == "Beta memo"
    assert_error(api.get("sessions", status="exploded"), 422)


def test_update_while_not_running_and_refused_while_running(api, project, demo_llm):
    sid = new_session(api, project).json()["id"]
    changed = api.patch(f"sessions/{sid}", {"title": "Renamed", "max_rounds": 3, "agents": two_agents()[:1]})
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["title"], body["max_rounds"], len(body["agents"])) == ("Renamed", 3, 1)
    assert body["brief"] == "Argue for protected bike lanes."  # untouched fields keep their values
    assert_error(api.patch(f"sessions/{sid}", {"max_rounds": 0}), 422)
    WritingSession.objects.filter(pk=sid).update(status=Status.RUNNING)
    assert_error(api.patch(f"sessions/{sid}", {"title": "Mid-run"}), 409, "conflict")
    assert_error(api.delete(f"sessions/{sid}"), 409)
    assert WritingSession.objects.get(pk=sid).title == "Renamed"


@pytest.mark.django_db(transaction=True)  # the engine runs in another thread
def test_start_says_everything_missing_then_runs_and_retries_are_idempotent(
    api, project, demo_llm, instant_demo, enqueued
):
    sid = new_session(api, project, brief="").json()["id"]
    body = assert_error(api.post(f"sessions/{sid}/start"), 422, "not_ready")
    assert any("brief" in e["message"] for e in body["errors"])
    api.patch(f"sessions/{sid}", {"brief": "Argue for bike lanes."})
    headers = {"Idempotency-Key": "start-1"}
    started = api.post(f"sessions/{sid}/start", headers=headers)
    assert started.status_code == 200 and started.json()["status"] == "queued"
    again = api.post(f"sessions/{sid}/start", headers=headers)
    assert again.json() == started.json() and again["Idempotent-Replayed"] == "true"
    assert IdempotencyRecord.objects.count() == 1
    engine.drive(sid)
    done = api.get(f"sessions/{sid}").json()
    assert done["status"] == "completed" and done["round"] == 2 and done["credits_used"] > 0
    turns = api.get(f"sessions/{sid}/turns").json()
    assert turns["count"] == 4
    turn = turns["items"][-1]
    assert turn["status"] == "completed" and turn["credits"] > 0 and turn["usage"]["output_tokens"] > 0
    assert turn["overall_score"] is not None and turn["scores"]
    assert sum(t["credits"] for t in turns["items"]) == done["credits_used"]
    document = api.get(f"sessions/{sid}/document").json()
    assert document["content"] and document["version"] >= 2
    versions = api.get(f"sessions/{sid}/versions").json()
    diff = api.get(f"sessions/{sid}/diff", from_version=1, to_version=versions["count"]).json()
    assert diff["unified"].startswith("--- v1") and diff["from_version"] == 1 and diff["stats"]
    exported = api.get(f"sessions/{sid}/export", format="md")
    assert exported.status_code == 200 and document["content"].strip()[:40] in exported.content.decode()
    assert api.get(f"sessions/{sid}/export", format="docx")["Content-Type"].startswith("application/vnd")
    assert_error(api.get(f"sessions/{sid}/export", format="pdf"), 422)
    # Continue for one more round, then the controls refuse what does not apply.
    cont = api.post(f"sessions/{sid}/continue", {"rounds": 1})
    assert cont.status_code == 200 and cont.json()["status"] == "queued"
    assert_error(api.post(f"sessions/{sid}/resume"), 409)
    stopped = api.post(f"sessions/{sid}/stop")
    assert stopped.json()["status"] in ("stopped", "stopping")
    assert_error(api.post(f"sessions/{sid}/continue", {"rounds": 99}), 422)


@pytest.mark.django_db(transaction=True)
def test_pause_and_resume(api, project, demo_llm, instant_demo, enqueued):
    sid = new_session(api, project).json()["id"]
    api.post(f"sessions/{sid}/start")
    assert api.post(f"sessions/{sid}/pause").json()["status"] == "pausing"
    engine.drive(sid)
    assert api.get(f"sessions/{sid}").json()["status"] == "paused"
    assert_error(api.post(f"sessions/{sid}/pause"), 409)  # already paused
    assert api.post(f"sessions/{sid}/resume").json()["status"] == "queued"


def test_the_report_exists_only_for_the_roundtable(api, project, demo_llm):
    sid = new_session(api, project).json()["id"]
    body = assert_error(api.get(f"sessions/{sid}/report"), 404)
    assert "has no report" in body["message"]


def test_models_say_what_the_plan_allows_with_prices(api, demo_llm, cheap_llm, premium_llm, owner):
    models = {m["ref"]: m for m in api.get("models").json()}
    premium = models[f"{premium_llm.provider}:{premium_llm.model_id}"]
    assert premium["allowed"] is False and premium["reason"] and premium["output_price_per_mtok"]
    demo = models["demo:demo-writer"]
    assert demo["allowed"] is True and demo["is_demo"] and demo["credits_per_1k_in_1k_out"] >= 1
    CreditAccount.objects.filter(user=owner).update(plan="pro")
    models = {m["ref"]: m for m in api.get("models").json()}
    on_pro = models[f"{premium_llm.provider}:{premium_llm.model_id}"]
    assert "plan" not in on_pro["reason"].lower() and not on_pro["upgrade_url"]


@pytest.mark.django_db(transaction=True)
def test_balance_and_usage(api, project, demo_llm, instant_demo, enqueued, owner):
    balance = api.get("balance").json()
    assert balance["plan"] == "free" and balance["balance"] == 500 and balance["api_requests_per_minute"] == 60
    sid = new_session(api, project, max_rounds=1).json()["id"]
    api.post(f"sessions/{sid}/start")
    engine.drive(sid)
    usage = api.get("usage").json()
    spent = api.get(f"sessions/{sid}").json()["credits_used"]
    assert usage["balance"] == 500 - spent
    assert usage["by_session"][0]["session_id"] == sid and usage["by_session"][0]["credits"] == spent
    kinds = {e["kind"] for e in usage["items"]}
    assert "settlement" in kinds
