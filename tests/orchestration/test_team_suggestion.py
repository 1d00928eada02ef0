"""Suggest a team (issue 10, section 3): a planner model proposes a team through the real SDKs against the
wire-level fake server; the reply is validated with pydantic, repaired once, charged like any call, edited by
the user and accepted into the builder."""

from __future__ import annotations

import json

import pytest
from django.db.models import Sum
from django.urls import reverse

from billing.models import CreditEntry
from billing.services import get_balance
from orchestration.models import Agent, Flow
from orchestration.team_suggestion import extract_json
from tests.studio_fixtures import *  # noqa: F403 - fixtures

MINI = "openai:studio-mini"


def proposal(flow: str = "sequential", model: str = MINI, **changes) -> dict:
    data = {
        "flow": flow,
        "rationale": "A writer and an evidence editor fit an argued op-ed.",
        "agents": [
            {
                "name": "Op-ed writer",
                "role": "writer",
                "model": model,
                "role_prompt": "You write a persuasive op-ed about bike lanes.",
                "criteria": [{"name": "Argument", "description": "A clear thesis.", "weight": 1.5}],
            },
            {
                "name": "Fact checker",
                "role": "editor",
                "model": model,
                "role_prompt": "You check every claim and ask for sources.",
                "criteria": [{"name": "Evidence", "description": "Claims supported.", "weight": 2}],
            },
        ],
        "termination": {"max_rounds": 3, "score_threshold": 8.5, "convergence_percent": 5},
    }
    data.update(changes)
    return data


@pytest.fixture
def planner(fake_llm, settings, cheap_llm):
    settings.PROVIDERS = fake_llm.provider_settings()
    return cheap_llm


@pytest.fixture
def starter(owner):
    from billing import services

    account = services.get_account(owner)
    account.plan = "starter"
    account.save()
    return owner


def suggest(client, session, model, goal="A persuasive op-ed for the city council."):
    return client.post(
        reverse("team_suggest", args=[session.pk]),
        {"brief": session.brief, "goal": goal, "planner": str(model.pk), "include_document": "on"},
    )


def ledger(user) -> dict:
    entries = CreditEntry.objects.filter(user=user, idempotency_key__startswith="suggest:")
    return {
        "reserved": entries.filter(kind="reservation").count(),
        "closed": entries.exclude(reservation_key="").count(),
        "charged": entries.filter(kind="settlement").aggregate(total=Sum("usage"))["total"] or 0,
    }


def team(session) -> list[tuple[str, str]]:
    return list(session.agents.order_by("order").values_list("name", "role"))


def test_a_valid_json_proposal_is_shown_for_editing_and_charged_like_any_call(
    owner_client, owner, draft, planner, fake_llm
):
    before = get_balance(owner)
    page = owner_client.get(reverse("team_suggest", args=[draft.pk])).content.decode()
    assert 'data-testid="suggest-estimate"' in page and "This costs at most" in page
    fake_llm.reply(json.dumps(proposal()))

    html = suggest(owner_client, draft, planner).content.decode()

    assert 'data-testid="proposal-form"' in html
    assert 'value="Op-ed writer"' in html and 'value="Fact checker"' in html
    assert "You check every claim and ask for sources." in html
    # Went through the OpenAI SDK to the fake server, with the brief and the goal in the prompt.
    (call,) = fake_llm.generation_requests()
    assert call.json["model"] == "studio-mini"
    assert "Argue for bike lanes." in call.user_text and "city council" in call.user_text
    assert "openai:studio-mini" in call.system_text and "sequential" in call.system_text
    books = ledger(owner)
    assert books["reserved"] == 1 and books["closed"] == 1 and books["charged"] > 0
    assert get_balance(owner) == before - books["charged"]
    assert f"It cost <strong>{books['charged']} credit" in html
    # Nothing is saved before accepting.
    assert team(draft) == [("Writer", "writer"), ("Editor", "editor")]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda body: f"Here is my proposal:\n\n```json\n{body}\n```\n\nLet me know if you want changes.",
        lambda body: f"Sure. The team below fits the brief. {body} I hope this helps.",
    ],
    ids=["fenced", "prose-wrapped"],
)
def test_fenced_or_prose_wrapped_json_is_read_without_a_repair(owner_client, draft, planner, fake_llm, wrap):
    fake_llm.reply(wrap(json.dumps(proposal(), indent=2)))
    html = suggest(owner_client, draft, planner).content.decode()
    assert 'value="Fact checker"' in html
    assert len(fake_llm.generation_requests()) == 1
    assert "after one repair" not in html


def test_invalid_json_gets_one_repair_with_the_validation_errors(owner_client, owner, draft, planner, fake_llm):
    broken = proposal()
    broken["agents"][1]["criteria"][0]["weight"] = 500
    del broken["agents"][0]["role_prompt"]
    fake_llm.reply(json.dumps(broken), json.dumps(proposal()))

    html = suggest(owner_client, draft, planner).content.decode()

    _first, repair = fake_llm.generation_requests()
    assert "role_prompt" in repair.user_text and "less than or equal to 100" in repair.user_text
    assert json.dumps(broken) in repair.user_text  # the model sees what it sent
    assert 'value="Fact checker"' in html and "after one repair" in html
    books = ledger(owner)
    assert books["reserved"] == 2 and books["closed"] == 2
    assert f"It cost <strong>{books['charged']} credit" in html


def test_a_cut_off_reply_is_repaired_too(owner_client, draft, planner, fake_llm):
    fake_llm.reply(json.dumps(proposal())[:120], stop_reason="length")
    fake_llm.reply(json.dumps(proposal()))
    html = suggest(owner_client, draft, planner).content.decode()
    repair = fake_llm.generation_requests()[1]
    assert "cut off at the output limit" in repair.user_text
    assert 'value="Op-ed writer"' in html


def test_invalid_twice_is_a_clear_error_nothing_saved_and_both_calls_charged(
    owner_client, owner, draft, planner, fake_llm
):
    before = get_balance(owner)
    fake_llm.reply("I think a writer and an editor would work well.", json.dumps({"flow": "sequential", "agents": []}))

    response = suggest(owner_client, draft, planner)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="suggest-error"' in html
    assert "not a valid team, even after one repair attempt" in html
    assert "termination: Field required" in html
    assert len(fake_llm.generation_requests()) == 2
    books = ledger(owner)
    assert books["reserved"] == 2 and books["closed"] == 2  # no credits left held
    assert books["charged"] > 0 and get_balance(owner) == before - books["charged"]
    assert f"Charged {books['charged']} credit" in html
    assert team(draft) == [("Writer", "writer"), ("Editor", "editor")]


def test_a_flow_the_plan_forbids_is_refused_with_the_upgrade_reason(owner_client, owner, draft, planner, fake_llm):
    roundtable = proposal(flow="roundtable")
    roundtable["agents"][0]["role"] = "critic"
    roundtable["agents"][1]["role"] = "moderator"
    fake_llm.reply(json.dumps(roundtable))

    html = suggest(owner_client, draft, planner).content.decode()

    assert "The Free plan does not include the roundtable flow" in html
    assert "Upgrade to Starter" in html and reverse("pricing") in html
    assert len(fake_llm.generation_requests()) == 1  # refused, not repaired
    assert ledger(owner)["closed"] == 1
    # The planner was told which flows the plan allows.
    assert "roundtable:" not in fake_llm.generation_requests()[0].system_text
    draft.refresh_from_db()
    assert draft.flow == Flow.SEQUENTIAL and team(draft) == [("Writer", "writer"), ("Editor", "editor")]


@pytest.mark.parametrize("model_ref", ["openai:gpt-imaginary", "anthropic:studio-opus"], ids=["unknown", "plan-locked"])
def test_a_model_outside_the_users_catalogue_is_repaired_or_refused(
    owner_client, draft, planner, fake_llm, premium_llm, model_ref
):
    fake_llm.reply(json.dumps(proposal(model=model_ref)), json.dumps(proposal(model=model_ref)))
    html = suggest(owner_client, draft, planner).content.decode()
    assert f"&#x27;{model_ref}&#x27; is not a model this user can use" in html
    assert "Op-ed writer, model" in html  # the location in words
    repair = fake_llm.generation_requests()[1]
    assert f"'{model_ref}' is not a model this user can use" in repair.user_text
    assert team(draft) == [("Writer", "writer"), ("Editor", "editor")]


def test_another_users_session_is_a_404_and_calls_nothing(client, outsider, draft, planner, fake_llm):
    client.force_login(outsider)
    assert client.get(reverse("team_suggest", args=[draft.pk])).status_code == 404
    assert suggest(client, draft, planner).status_code == 404
    assert client.post(reverse("team_suggest_accept", args=[draft.pk]), accept_data(proposal())).status_code == 404
    assert client.get(reverse("team_suggest_estimate", args=[draft.pk])).status_code == 404
    assert fake_llm.generation_requests() == []
    assert team(draft) == [("Writer", "writer"), ("Editor", "editor")]


def test_a_provider_failure_says_so_and_releases_the_reservation(owner_client, owner, draft, planner, fake_llm):
    before = get_balance(owner)
    fake_llm.fail_always(400, message="Invalid request.")
    response = suggest(owner_client, draft, planner)
    assert response.status_code == 200
    html = response.content.decode()
    assert "The planner could not answer" in html
    assert get_balance(owner) == before
    assert ledger(owner)["closed"] == 1


def accept_data(data: dict, *, confirm: bool = True, **overrides) -> dict[str, str]:
    """What the proposal form posts, as the browser would send it."""
    term = data["termination"]
    post = {
        "flow": data["flow"],
        "max_rounds": str(term["max_rounds"]),
        "score_threshold": "" if term.get("score_threshold") is None else str(term["score_threshold"]),
        "convergence_percent": "" if term.get("convergence_percent") is None else str(term["convergence_percent"]),
        "stop_when_no_high_issues": "on",
        "stop_below_change_percent": "5",
        "rationale": data.get("rationale", ""),
        "brief": "Argue for bike lanes.",
        "agent_count": str(len(data["agents"])),
    }
    if confirm:
        post["confirm_replace"] = "on"
    for i, agent in enumerate(data["agents"]):
        post.update(
            {
                f"a{i}-keep": "on",
                f"a{i}-name": agent["name"],
                f"a{i}-role": agent["role"],
                f"a{i}-model": agent["model"],
                f"a{i}-role_prompt": agent["role_prompt"],
                f"a{i}-criteria_count": str(len(agent["criteria"]) + 1),
            }
        )
        for j, criterion in enumerate(agent["criteria"]):
            post.update(
                {
                    f"a{i}-c{j}-name": criterion["name"],
                    f"a{i}-c{j}-description": criterion.get("description", ""),
                    f"a{i}-c{j}-weight": str(criterion["weight"]),
                }
            )
    post.update(overrides)
    return post


def test_accepting_an_edited_proposal_replaces_the_team_after_confirmation(owner_client, draft, planner):
    url = reverse("team_suggest_accept", args=[draft.pk])
    unconfirmed = owner_client.post(url, accept_data(proposal(), confirm=False)).content.decode()
    assert "Replace the current team" in unconfirmed and 'data-testid="accept-problems"' in unconfirmed
    assert team(draft) == [("Writer", "writer"), ("Editor", "editor")]

    edited = accept_data(proposal(), **{"a1-name": "Evidence editor", "a1-c1-name": "Sources", "a1-c1-weight": "3"})
    response = owner_client.post(url, edited)

    assert response.status_code == 302 and response["Location"] == reverse("session_edit", args=[draft.pk])
    assert team(draft) == [("Op-ed writer", "writer"), ("Evidence editor", "editor")]
    editor = Agent.objects.get(session=draft, name="Evidence editor")
    assert editor.model.model_id == "studio-mini"
    assert list(editor.criteria.values_list("name", "weight")) == [("Evidence", 2.0), ("Sources", 3.0)]
    draft.refresh_from_db()
    assert (draft.max_rounds, draft.score_threshold, draft.convergence_percent) == (3, 8.5, 5.0)
    builder = owner_client.get(response["Location"]).content.decode()
    assert "Accepted the suggested team: 2 agents" in builder and "Evidence editor" in builder


def test_accept_rechecks_the_plan_and_the_models_on_the_server(owner_client, draft, planner, premium_llm):
    url = reverse("team_suggest_accept", args=[draft.pk])
    roundtable = proposal(flow="roundtable")
    roundtable["agents"][0]["role"], roundtable["agents"][1]["role"] = "critic", "moderator"
    html = owner_client.post(url, accept_data(roundtable)).content.decode()
    assert "does not include the roundtable flow" in html
    html = owner_client.post(url, accept_data(proposal(), **{"a0-model": "anthropic:studio-opus"})).content.decode()
    assert "Select a valid choice" in html
    html = owner_client.post(url, accept_data(proposal(), **{"a0-role": "critic", "flow": "sequential", "a0-keep": ""}))
    assert team(draft) == [("Fact checker", "editor")]  # dropping an agent is an edit too


def test_the_demo_planner_proposes_an_honest_team_from_the_brief(owner_client, owner, starter, draft, demo_llm):
    draft.brief = "Write a product spec for a bike-share launch in Leeds."
    draft.save()
    html = suggest(owner_client, draft, demo_llm, goal="A spec the board can approve.").content.decode()
    assert "Demo planner (fixed rules, not a language model)" in html
    assert 'value="roundtable" selected' in html
    assert 'value="Product critic"' in html and 'value="Moderator"' in html
    assert ledger(owner)["charged"] >= 1  # demo calls cost credits by tokens, like any call


def test_demo_planner_on_free_stays_within_the_plan(owner_client, draft, demo_llm):
    draft.brief = "Write a product spec for a bike-share launch."
    draft.save()
    html = suggest(owner_client, draft, demo_llm).content.decode()
    assert 'value="sequential" selected' in html
    assert html.count('data-testid="proposed-agent"') == 2


def test_extract_json_reads_objects_in_fences_and_prose_and_gives_none_for_cut_off_text():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Text ```json\n{"a": [1, 2]}\n``` more') == {"a": [1, 2]}
    assert extract_json('Before {"x": {"y": 2}} after {"z": 1}') == {"x": {"y": 2}}
    assert extract_json('{"a": [1, 2') is None
    assert extract_json("no json here") is None


def test_without_enough_credits_nothing_is_called_or_charged(owner_client, owner, draft, planner, fake_llm):
    from billing.services import adjust_credits

    adjust_credits(user=owner, amount=-get_balance(owner), reason="test: empty the account", staff_user=None)
    html = suggest(owner_client, draft, planner).content.decode()
    assert "Out of credits: a suggestion with Studio Mini may cost up to" in html
    assert fake_llm.generation_requests() == []
    assert get_balance(owner) == 0 and ledger(owner)["reserved"] == 0


def test_the_demo_planner_proposes_the_pipeline_for_researched_work_and_it_can_be_accepted(
    owner_client, starter, draft, demo_llm
):
    draft.brief = "Write a research report on bike-share usage, citing the sources."
    draft.save()
    html = suggest(owner_client, draft, demo_llm, goal="A report for the transport committee.").content.decode()
    assert 'value="pipeline" selected' in html
    for name in ("Researcher", "Planner", "Builder", "Reviewer"):
        assert f'value="{name}"' in html
    roles = ["researcher", "planner", "builder", "reviewer"]
    data = proposal(flow="pipeline", model="demo:demo-writer")
    data["agents"] = [
        {**data["agents"][0], "name": role.title(), "role": role, "model": "demo:demo-writer"} for role in roles
    ]
    response = owner_client.post(reverse("team_suggest_accept", args=[draft.pk]), accept_data(data))
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.flow == "pipeline" and [r for _, r in team(draft)] == roles


def test_an_overloaded_provider_is_retried_once_and_only_the_answer_is_charged(
    owner_client, owner, draft, planner, fake_llm, monkeypatch
):
    monkeypatch.setattr("orchestration.providers.retry.retry_delay", lambda attempt, retry_after=None: 0.01)
    before = get_balance(owner)
    fake_llm.fail_next(503)
    fake_llm.reply(json.dumps(proposal()))
    html = suggest(owner_client, draft, planner).content.decode()
    assert 'value="Fact checker"' in html
    assert len(fake_llm.generation_requests()) == 2
    books = ledger(owner)
    assert books["reserved"] == 2 and books["closed"] == 2
    assert get_balance(owner) == before - books["charged"]
    assert CreditEntry.objects.filter(user=owner, kind="release", idempotency_key__endswith=":1:release").exists()


def test_a_provider_that_stays_down_fails_clearly_after_one_retry(
    owner_client, owner, draft, planner, fake_llm, monkeypatch
):
    monkeypatch.setattr("orchestration.providers.retry.retry_delay", lambda attempt, retry_after=None: 0.01)
    before = get_balance(owner)
    fake_llm.fail_always(503)
    html = suggest(owner_client, draft, planner).content.decode()
    assert "The planner could not answer" in html and "Charged 0 credits" in html
    assert len(fake_llm.generation_requests()) == 2
    assert get_balance(owner) == before
