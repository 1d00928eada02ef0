"""The team page of a conversation: its services, the page through Django's test client (hostile input
included), and that a saved model / prompt / tool choice is what the next reply's call sends (real SDKs
against the wire-level fake server)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import Agent, Conversation, LLMModel, Status
from orchestration.services import ServiceError

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def priced(provider: str, model_id: str, output: str, name: str = "") -> LLMModel:
    model, _ = LLMModel.objects.update_or_create(
        provider=provider,
        model_id=model_id,
        defaults={
            "display_name": name or model_id,
            "context_window": 200_000,
            "input_price_per_mtok": Decimal(output) / 4,
            "cached_input_price_per_mtok": Decimal("0.1"),
            "output_price_per_mtok": Decimal(output),
            "enabled": True,
        },
    )
    return model


def by_name(conversation, name: str) -> Agent:
    return conversation.session.agents.get(name=name)


def card_data(agent: Agent, **overrides) -> dict:
    """What the agent's card posts when saved unchanged (overrides replace fields; tools is a list)."""
    data = {
        "name": agent.name,
        "model": agent.model_id,
        "fallback_model": agent.fallback_model_id or "",
        "role_prompt": agent.role_prompt,
        "tools": ["current_time", "search_conversation", "search_references"] if agent.tools is None else agent.tools,
    }
    data.update(overrides)
    return {f"agent-{agent.pk}-{key}": value for key, value in data.items()}


def running(conversation) -> None:
    conversation.session.status = Status.RUNNING
    conversation.session.save(update_fields=["status"])


# --- services -----------------------------------------------------------------------------------------------


def test_update_settings_renames_and_bounds_the_handoff_limit(conversation, funded_owner):
    conversations.update_settings(
        conversation=conversation, user=funded_owner, title="  Street  trees ", max_handoffs=5
    )
    conversation.refresh_from_db()
    assert (conversation.title, conversation.max_handoffs, conversation.session.title) == (
        "Street trees",
        5,
        "Street trees",
    )
    for bad in (-1, 11):
        with pytest.raises(ServiceError, match="0 to 10"):
            conversations.update_settings(conversation=conversation, user=funded_owner, title="x", max_handoffs=bad)
    with pytest.raises(ServiceError, match="title"):
        conversations.update_settings(conversation=conversation, user=funded_owner, title="   ", max_handoffs=2)
    conversation.refresh_from_db()
    assert (conversation.title, conversation.max_handoffs) == ("Street trees", 5)


def test_add_and_remove_specialists_within_the_plan(conversation, funded_owner):
    from billing import plans

    # The Writing desk has 3 specialists: the Free plan's limit.
    assert plans.PLANS["free"].max_specialists == 3
    with pytest.raises(ServiceError, match="allows up to 3 specialists") as refused:
        conversations.add_specialist(conversation=conversation, user=funded_owner, kind="data")
    assert refused.value.upgrade_url
    assert conversation.session.agents.count() == 4

    editing = by_name(conversation, "Editing specialist")
    conversations.remove_specialist(conversation=conversation, user=funded_owner, agent_id=editing.pk)
    added = conversations.add_specialist(conversation=conversation, user=funded_owner, kind="data")
    assert (added.name, added.role) == ("Data specialist", "specialist")
    assert "data specialist" in added.role_prompt
    assert [a.name for a in conversations.team(conversation)] == [
        "Triage",
        "Research specialist",
        "Fact-check specialist",
        "Data specialist",
    ]
    triage = by_name(conversation, "Triage")
    with pytest.raises(ServiceError, match="cannot be removed"):
        conversations.remove_specialist(conversation=conversation, user=funded_owner, agent_id=triage.pk)
    with pytest.raises(ServiceError, match="Pick a kind"):
        conversations.add_specialist(conversation=conversation, user=funded_owner, kind="wizard")


def test_a_second_specialist_of_a_kind_gets_a_numbered_name(conversation, funded_owner):
    from billing.plans import PRO
    from billing.services import get_account

    account = get_account(funded_owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    second = conversations.add_specialist(conversation=conversation, user=funded_owner, kind="research")
    assert second.name == "Research specialist 2"


def test_team_writes_are_refused_while_a_reply_is_written_and_for_others(conversation, funded_owner, outsider):
    triage = by_name(conversation, "Triage")
    conversations.update_team_agent(conversation=conversation, user=funded_owner, agent_id=triage.pk, changes={})
    with pytest.raises(ServiceError, match="your own"):
        conversations.update_team_agent(
            conversation=conversation, user=outsider, agent_id=triage.pk, changes={"role_prompt": "Mine now."}
        )
    running(conversation)
    for call in (
        lambda: conversations.update_settings(conversation=conversation, user=funded_owner, title="x", max_handoffs=1),
        lambda: conversations.add_specialist(conversation=conversation, user=funded_owner, kind="blank"),
        lambda: conversations.update_team_agent(
            conversation=conversation, user=funded_owner, agent_id=triage.pk, changes={"role_prompt": "New."}
        ),
    ):
        with pytest.raises(ServiceError, match="reply is being written"):
            call()
    triage.refresh_from_db()
    assert triage.role_prompt.startswith("You are the triage agent")


def test_update_team_agent_refuses_duplicate_names_other_teams_agents_and_locked_models(
    conversation, funded_owner, project
):
    triage = by_name(conversation, "Triage")
    research = by_name(conversation, "Research specialist")
    with pytest.raises(ServiceError, match="already has that name"):
        conversations.update_team_agent(
            conversation=conversation, user=funded_owner, agent_id=research.pk, changes={"name": "triage"}
        )
    other = conversations.create_conversation(project=project, user=funded_owner)
    with pytest.raises(ServiceError, match="not in this conversation"):
        conversations.update_team_agent(
            conversation=other, user=funded_owner, agent_id=triage.pk, changes={"name": "Borrowed"}
        )
    premium = priced("anthropic", "studio-opus", "75", "Studio Opus")
    with pytest.raises(ServiceError, match="does not include"):
        conversations.update_team_agent(
            conversation=conversation, user=funded_owner, agent_id=triage.pk, changes={"model": premium}
        )
    triage.refresh_from_db()
    assert triage.model.is_demo and triage.name == "Triage"


# --- the page ------------------------------------------------------------------------------------------------


def test_the_chat_page_links_to_the_team_page_which_shows_every_agent(client, funded_owner, conversation):
    client.force_login(funded_owner)
    chat = client.get(conversation.get_absolute_url()).content.decode()
    url = reverse("conversation_team", args=[conversation.pk])
    assert f'href="{url}"' in chat
    page = client.get(url).content.decode()
    for name in ("Triage", "Research specialist", "Editing specialist", "Fact-check specialist"):
        assert f"Save {name}" in page
    assert page.count('data-testid="agent-remove"') == 3  # triage cannot be removed
    assert "3 of 3 specialists" in page and "allows up to 3 specialists" in page
    assert "applies from your next message" in page
    assert "Search the project&#x27;s references" in page


def test_save_an_agent_through_htmx(client, funded_owner, conversation):
    cheap = priced("openai", "gpt-4.1-test", "4")
    research = by_name(conversation, "Research specialist")
    client.force_login(funded_owner)
    response = client.post(
        reverse("conversation_team_agent", args=[conversation.pk, research.pk]),
        card_data(
            research,
            name="Sources desk",
            model=cheap.pk,
            role_prompt="You are the sources desk.",
            tools=["current_time"],
        ),
        headers=HTMX,
    )
    body = response.content.decode()
    assert response.status_code == 200 and body.lstrip().startswith(f'<article id="agent-{research.pk}"')
    assert "Saved. The next message uses it." in body
    research.refresh_from_db()
    assert (research.name, research.model_id, research.role_prompt, research.tools) == (
        "Sources desk",
        cheap.pk,
        "You are the sources desk.",
        ["current_time"],
    )


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"model": "999999"}, "Unknown model. Pick one from the list."),
        ({"model": "not-a-number"}, "Unknown model. Pick one from the list."),
        ({"fallback_model": "999999"}, "Unknown model. Pick one from the list."),
        ({"role_prompt": "   "}, "Write the agent&#x27;s role prompt."),
        ({"role_prompt": "x" * 20_001}, "at most 20000 characters"),
        ({"name": ""}, "Name this agent."),
        ({"name": "n" * 81}, "at most 80 characters"),
        ({"name": "Editing Specialist"}, "already has that name"),
        ({"tools": ["rm_rf"]}, "Select a valid choice"),
        ({"role_prompt": "nul \x00 byte"}, "Null characters are not allowed"),
    ],
)
def test_hostile_agent_input_is_refused_with_the_text_kept(client, funded_owner, conversation, overrides, error):
    research = by_name(conversation, "Research specialist")
    before = Agent.objects.filter(pk=research.pk).values().get()
    client.force_login(funded_owner)
    url = reverse("conversation_team_agent", args=[conversation.pk, research.pk])
    data = card_data(research, **overrides)
    htmx = client.post(url, data, headers=HTMX)
    assert htmx.status_code == 200 and error in htmx.content.decode()
    assert "Not saved: fix the fields marked below." in htmx.content.decode()
    plain = client.post(url, data)
    assert plain.status_code == 400 and error in plain.content.decode()
    assert Agent.objects.filter(pk=research.pk).values().get() == before


def test_a_plan_locked_model_is_shown_locked_and_refused(client, funded_owner, conversation, settings):
    settings.PROVIDERS = {**settings.PROVIDERS, "anthropic": {"api_key": "k"}, "openai": {"api_key": "k"}}
    premium = priced("anthropic", "studio-opus", "75", "Studio Opus")
    triage = by_name(conversation, "Triage")
    client.force_login(funded_owner)
    page = client.get(reverse("conversation_team", args=[conversation.pk])).content.decode()
    assert "Studio Opus" in page and "locked:" in page
    response = client.post(
        reverse("conversation_team_agent", args=[conversation.pk, triage.pk]),
        card_data(triage, model=premium.pk, role_prompt="My new carefully written prompt."),
        headers=HTMX,
    )
    body = response.content.decode()
    assert "does not include" in body and "My new carefully written prompt." in body  # nothing typed is lost
    triage.refresh_from_db()
    assert triage.model.is_demo


def test_too_many_specialists_is_refused_with_the_upgrade_reason(client, funded_owner, conversation):
    client.force_login(funded_owner)
    response = client.post(reverse("conversation_team_add", args=[conversation.pk]), {"kind": "code"}, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and response.headers["HX-Retarget"] == "#add-specialist"
    assert "allows up to 3 specialists per conversation" in body and "See plans" in body
    assert conversation.session.agents.count() == 4
    plain = client.post(reverse("conversation_team_add", args=[conversation.pk]), {"kind": "code"})
    assert plain.status_code == 400
    bogus = client.post(reverse("conversation_team_add", args=[conversation.pk]), {"kind": "<script>"}, headers=HTMX)
    assert "Pick a kind of specialist" in bogus.content.decode() and "<script>" not in bogus.content.decode()


def test_remove_then_add_a_specialist_through_htmx(client, funded_owner, conversation):
    client.force_login(funded_owner)
    editing = by_name(conversation, "Editing specialist")
    removed = client.post(reverse("conversation_team_remove", args=[conversation.pk, editing.pk]), headers=HTMX)
    assert removed.status_code == 200 and 'hx-swap-oob="outerHTML"' in removed.content.decode()
    assert "2 of 3 specialists" in removed.content.decode()
    assert not Agent.objects.filter(pk=editing.pk).exists()
    added = client.post(reverse("conversation_team_add", args=[conversation.pk]), {"kind": "code"}, headers=HTMX)
    body = added.content.decode()
    new = by_name(conversation, "Code specialist")
    assert body.lstrip().startswith(f'<article id="agent-{new.pk}"') and "3 of 3 specialists" in body
    triage = by_name(conversation, "Triage")
    refused = client.post(reverse("conversation_team_remove", args=[conversation.pk, triage.pk]), headers=HTMX)
    assert "cannot be removed" in refused.content.decode()
    assert Agent.objects.filter(pk=triage.pk).exists()


def test_settings_form_errors_and_a_streaming_reply(client, funded_owner, conversation):
    client.force_login(funded_owner)
    url = reverse("conversation_team_settings", args=[conversation.pk])
    for data, error in (
        ({"title": "Kept", "max_handoffs": "11"}, "less than or equal to 10"),
        ({"title": "Kept", "max_handoffs": "lots"}, "Enter a whole number"),
        ({"title": "", "max_handoffs": "2"}, "Give the conversation a title."),
        ({"title": "t" * 201, "max_handoffs": "2"}, "at most 200 characters"),
    ):
        response = client.post(url, data, headers=HTMX)
        assert response.status_code == 200 and error in response.content.decode()
        assert client.post(url, data).status_code == 400
    response = client.post(url, {"title": "Hedges", "max_handoffs": "1"}, headers=HTMX)
    assert "Saved. The next message uses these settings." in response.content.decode()
    running(conversation)
    assert (
        "A reply is being written now"
        in client.get(reverse("conversation_team", args=[conversation.pk])).content.decode()
    )
    busy = client.post(url, {"title": "Late change", "max_handoffs": "4"})
    assert busy.status_code == 409 and "reply is being written" in busy.content.decode()
    busy = client.post(url, {"title": "Late change", "max_handoffs": "4"}, headers=HTMX)
    assert "Late change" in busy.content.decode()  # what was typed stays in the form
    conversation.refresh_from_db()
    assert (conversation.title, conversation.max_handoffs) == ("Hedges", 1)


def test_another_users_conversation_and_agents_are_404(client, outsider, conversation, project, funded_owner):
    triage = by_name(conversation, "Triage")
    mine = conversations.create_conversation(project=project, user=funded_owner)
    client.force_login(outsider)
    assert client.get(reverse("conversation_team", args=[conversation.pk])).status_code == 404
    for name, args, data in (
        ("conversation_team_settings", [conversation.pk], {"title": "Mine", "max_handoffs": "1"}),
        ("conversation_team_add", [conversation.pk], {"kind": "data"}),
        ("conversation_team_agent", [conversation.pk, triage.pk], card_data(triage, name="Mine")),
        ("conversation_team_remove", [conversation.pk, by_name(conversation, "Editing specialist").pk], {}),
    ):
        assert client.post(reverse(name, args=args), data).status_code == 404
    # The owner cannot reach an agent of one conversation through another one's URL either.
    client.force_login(funded_owner)
    response = client.post(
        reverse("conversation_team_agent", args=[mine.pk, triage.pk]), card_data(triage, name="Crossed")
    )
    assert response.status_code == 404
    triage.refresh_from_db()
    assert triage.name == "Triage" and Conversation.objects.get(pk=conversation.pk).title != "Mine"


def test_team_posts_need_the_csrf_token(funded_owner, conversation):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(funded_owner)
    triage = by_name(conversation, "Triage")
    response = client.post(
        reverse("conversation_team_agent", args=[conversation.pk, triage.pk]), card_data(triage, name="Forged")
    )
    assert response.status_code == 403
    assert client.post(reverse("conversation_team_add", args=[conversation.pk]), {"kind": "data"}).status_code == 403
    triage.refresh_from_db()
    assert triage.name == "Triage"


# --- what the next reply sends --------------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "model_id"), [("anthropic", "claude-test"), ("openai", "gpt-4.1-test")])
def test_the_next_reply_uses_the_saved_model_prompt_and_tools(
    client, providers, enqueued, conversation, funded_owner, provider, model_id
):
    model = priced(provider, model_id, "4")
    triage = by_name(conversation, "Triage")
    client.force_login(funded_owner)
    response = client.post(
        reverse("conversation_team_agent", args=[conversation.pk, triage.pk]),
        card_data(triage, model=model.pk, role_prompt="You are the hedgerow desk. Talk about hedges.", tools=[]),
        headers=HTMX,
    )
    assert "Saved." in response.content.decode()
    providers.reply("Hedges it is.")
    conversations.send_message(conversation=conversation, user=funded_owner, text="Hello")
    assert runner.drive(conversation.session_id) == "finished"

    request = providers.generation_requests()[-1]
    body = request.json
    assert body["model"] == model_id
    system = body["system"] if provider == "anthropic" else body["messages"][0]["content"]
    system_text = system if isinstance(system, str) else " ".join(block["text"] for block in system)
    assert system_text.startswith("You are the hedgerow desk. Talk about hedges.")
    names = [t.get("name") or t["function"]["name"] for t in body.get("tools") or []]
    assert "transfer_to_research_specialist" in names  # handoffs stay
    assert not {"current_time", "search_conversation", "search_references"} & set(names)  # no tools chosen
    assert conversations.transcript(conversation)[-1].content == "Hedges it is."


def test_a_tool_the_agent_was_denied_is_not_run_even_if_the_model_calls_it(
    providers, enqueued, conversation, funded_owner
):
    from orchestration.models import ReferenceDocument, WritingSession
    from orchestration.retrieval import index_references

    source = WritingSession.objects.create(project=conversation.project, title="Essay", brief="Trees")
    reference = ReferenceDocument.objects.create(session=source, title="Shade", content="Hornbeams shade streets.")
    index_references([reference])
    model = priced("openai", "gpt-4.1-test", "4")
    triage = by_name(conversation, "Triage")
    conversations.update_team_agent(
        conversation=conversation, user=funded_owner, agent_id=triage.pk, changes={"model": model, "tools": []}
    )
    providers.reply("", tool_calls=[{"name": "search_references", "arguments": {"query": "hornbeams"}}])
    providers.reply("I cannot search the references.")
    conversations.send_message(conversation=conversation, user=funded_owner, text="What shades streets?")
    assert runner.drive(conversation.session_id) == "finished"
    tool = next(m for m in conversations.transcript(conversation) if m.role == "tool")
    assert tool.data["result"] == "There is no tool called search_references here."
    assert "Hornbeams" not in str(providers.generation_requests()[-1].json)
