"""Agents-as-tools with tools: a specialist asked as a tool (ask_<specialist>) may call the information tools
(never handoff or ask tools), its tool lines show under the question, and the per-message tool cap holds.
Real anthropic and openai SDKs against the wire-level fake server."""

from __future__ import annotations

import json

import pytest

from orchestration.conversations import services as conversations
from orchestration.models import Turn
from tests.conversations.conftest import ask, on_model, tool_names

pytestmark = pytest.mark.django_db(transaction=True)

INFO = {"current_time", "search_conversation", "search_references"}


def test_a_consulted_specialist_calls_a_tool_and_answers_with_its_result(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider)
    providers.reply("", tool_calls=[{"name": "ask_research_specialist", "arguments": {"question": "What day is it?"}}])
    providers.reply("", tool_calls=[{"name": "current_time", "arguments": {}}])
    providers.reply("It is the day the clock says.")
    providers.reply("Research says: it is the day the clock says.")
    assert ask(conversation, funded_owner, "Which day is it?") == "finished"

    shown = conversations.transcript(conversation)
    assert [(m.role, m.agent_name) for m in shown] == [
        ("user", ""),
        ("tool", "Triage"),  # the question to the specialist
        ("tool", "Research specialist"),  # the specialist's own tool call, under the question
        ("assistant", "Triage"),
    ]
    question, lookup = shown[1], shown[2]
    assert question.data["agent_tool"] and question.status == "completed"
    assert question.data["result"] == "It is the day the clock says."
    assert lookup.data["name"] == "current_time" and "UTC" in lookup.data["result"]
    assert lookup.data["consult_of"] == question.pk

    requests = providers.generation_requests()
    first_consult, second_consult = requests[1], requests[2]
    assert set(tool_names(first_consult)) == INFO  # no transfer_to_… or ask_… tools for a consulted specialist
    assert "What day is it?" in first_consult.user_text
    # The tool's result went back to the specialist natively.
    messages = second_consult.json["messages"]
    if provider == "anthropic":
        blocks = [b for m in messages if isinstance(m["content"], list) for b in m["content"]]
        use = next(b for b in blocks if b.get("type") == "tool_use")
        result = next(b for b in blocks if b.get("type") == "tool_result")
        assert use["name"] == "current_time" and result["tool_use_id"] == use["id"] and "UTC" in result["content"]
    else:
        call = next(m for m in messages if m.get("tool_calls"))["tool_calls"][0]
        result = next(m for m in messages if m["role"] == "tool")
        assert call["function"]["name"] == "current_time" and result["tool_call_id"] == call["id"]
    # Triage's final call saw the specialist's answer as its ask_ tool's result.
    assert "It is the day the clock says." in json.dumps(requests[3].json["messages"])
    consults = Turn.objects.filter(session=conversation.session, agent_name="Research specialist")
    assert consults.count() == 2 and all(t.status == "completed" and t.credits > 0 for t in consults)


def test_the_per_message_tool_cap_holds_for_a_consulted_specialist(providers, enqueued, conversation, funded_owner):
    on_model(conversation, "openai")

    def keep_asking_the_clock(request) -> list[dict]:
        return [{"name": "current_time", "arguments": {}}] if "current_time" in tool_names(request) else []

    providers.reply("", tool_calls=[{"name": "ask_editing_specialist", "arguments": {"question": "Time?"}}])
    for _ in range(12):
        providers.reply(
            lambda r: "" if keep_asking_the_clock(r) else "Enough: it is now.", tool_calls=keep_asking_the_clock
        )
    assert ask(conversation, funded_owner, "Ask the editor the time") == "finished"
    tools = [m for m in conversations.transcript(conversation) if m.role == "tool"]
    assert len(tools) == 8  # the ask itself and seven clock readings: the cap per message
    question = tools[0]
    assert question.data["result"] == "Enough: it is now."
    last_consult = [r for r in providers.generation_requests() if "asks you" in r.user_text][-1]
    assert "tools" not in last_consult.json
    assert "used the tools enough" in last_consult.system_text
