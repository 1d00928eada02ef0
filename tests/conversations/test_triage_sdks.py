"""Triage with handoffs through the real anthropic and openai SDKs against the wire-level fake server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import SessionEvent, Status, Turn
from tests.conversations.conftest import ask, on_model, tool_names

pytestmark = pytest.mark.django_db(transaction=True)


def visible(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.agent_name) for m in conversations.transcript(conversation)]


def test_triage_answers_itself_and_is_offered_a_transfer_tool_per_specialist(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider)
    providers.reply("Happy to help. What are you writing?")
    assert ask(conversation, funded_owner, "Hello there") == "finished"
    assert visible(conversation) == [("user", ""), ("assistant", "Triage")]
    assert conversations.transcript(conversation)[-1].content == "Happy to help. What are you writing?"
    names = tool_names(providers.generation_requests()[0])
    assert {
        "transfer_to_research_specialist",
        "transfer_to_editing_specialist",
        "transfer_to_fact_check_specialist",
        "ask_research_specialist",
        "current_time",
        "search_conversation",
        "search_references",
    } <= set(names)
    turn = Turn.objects.get(session=conversation.session)
    assert turn.status == "completed" and turn.credits > 0 and turn.input_tokens > 0


def test_triage_hands_off_and_the_specialist_streams_the_reply(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider)
    providers.reply(
        "Let me get research on this.",
        tool_calls=[{"name": "transfer_to_research_specialist", "arguments": {"reason": "needs sources"}}],
    )
    providers.reply("Here are three sources on urban heat islands.")
    assert ask(conversation, funded_owner, "I need sources on urban heat islands") == "finished"
    assert visible(conversation) == [
        ("user", ""),
        ("assistant", "Triage"),
        ("handoff", "Triage"),
        ("assistant", "Research specialist"),
    ]
    handoff = conversations.transcript(conversation)[2]
    assert handoff.data["to_name"] == "Research specialist" and handoff.data["reason"] == "needs sources"
    reply = conversations.transcript(conversation)[3]
    assert reply.content == "Here are three sources on urban heat islands." and reply.data["final"]
    second = providers.generation_requests()[1]
    assert "Research specialist" in second.system_text and "(you)" in second.system_text
    assert "handed the conversation to Research specialist: needs sources" in second.user_text
    assert "transfer_to_triage" in tool_names(second)  # the specialist can hand back
    # The reply streamed: its text arrived as chunk events of the specialist's turn before it was saved.
    specialist_turn = Turn.objects.get(session=conversation.session, agent_name="Research specialist")
    chunks = SessionEvent.objects.filter(turn=specialist_turn, kind="chunk")
    assert "".join(e.payload["text"] for e in chunks) == reply.content


def test_handoff_loop_is_capped_then_the_holder_answers(providers, enqueued, conversation, funded_owner, provider):
    on_model(conversation, provider)

    def bounce(request) -> list[dict]:
        transfers = [n for n in tool_names(request) if n.startswith("transfer_to_")]
        if not transfers:
            return []
        target = "transfer_to_triage" if "transfer_to_triage" in transfers else "transfer_to_editing_specialist"
        return [{"name": target, "arguments": {"reason": "not mine"}}]

    providers.default_reply = lambda request: "" if bounce(request) else "Fine, I will answer it myself."
    for _ in range(6):
        providers.reply(providers.default_reply, tool_calls=bounce)
    assert ask(conversation, funded_owner, "Polish this and check it") == "finished"
    handoffs = [m for m in conversations.transcript(conversation) if m.role == "handoff"]
    assert len(handoffs) == 3  # the default cap per message
    final = conversations.transcript(conversation)[-1]
    assert final.role == "assistant" and final.content == "Fine, I will answer it myself."
    requests = providers.generation_requests()
    assert len(requests) == 4
    assert not [n for n in tool_names(requests[-1]) if n.startswith("transfer_to_")]
    assert "handoff limit for this message is reached" in requests[-1].system_text


def test_a_model_without_tools_routes_by_text(providers, enqueued, conversation, funded_owner, provider):
    model = on_model(conversation, provider, supports_tools=False)
    providers.no_tool_models = {model.model_id}  # offering tools would be a 400
    providers.reply("HANDOFF: Research specialist | needs sources")
    providers.reply("Sources: the 2019 canopy survey.")
    assert ask(conversation, funded_owner, "Find me sources on canopy cover") == "finished"
    assert visible(conversation) == [("user", ""), ("handoff", "Triage"), ("assistant", "Research specialist")]
    assert conversations.transcript(conversation)[1].data["reason"] == "needs sources"
    for request in providers.generation_requests():
        assert "tools" not in request.json
    assert "HANDOFF: <teammate name> | <short reason>" in providers.generation_requests()[0].system_text


def test_tool_calls_and_results_are_in_the_transcript_and_sent_back_natively(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider)
    providers.reply("", tool_calls=[{"name": "current_time", "arguments": {}}])
    providers.reply("It is the afternoon.")
    assert ask(conversation, funded_owner, "What time is it?") == "finished"
    tool = conversations.transcript(conversation)[1]
    assert tool.role == "tool" and tool.data["name"] == "current_time" and "UTC" in tool.data["result"]
    second = providers.generation_requests()[1].json["messages"]
    if provider == "anthropic":
        blocks = [b for m in second for b in (m["content"] if isinstance(m["content"], list) else [])]
        use = next(b for b in blocks if b.get("type") == "tool_use")
        result = next(b for b in blocks if b.get("type") == "tool_result")
        assert use["name"] == "current_time" and result["tool_use_id"] == use["id"] and "UTC" in result["content"]
    else:
        call = next(m for m in second if m.get("tool_calls"))["tool_calls"][0]
        result = next(m for m in second if m["role"] == "tool")
        assert call["function"]["name"] == "current_time" and result["tool_call_id"] == call["id"]
        assert "UTC" in result["content"]


def test_agent_as_tool_the_specialist_answers_and_triage_keeps_the_conversation(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider)
    question = {"question": "Is 'canopy' countable?"}
    providers.reply("", tool_calls=[{"name": "ask_editing_specialist", "arguments": question}])
    providers.reply("Yes: canopies.")
    providers.reply("The editor says it is countable: canopies.")
    assert ask(conversation, funded_owner, "Plural of canopy?") == "finished"
    assert visible(conversation) == [("user", ""), ("tool", "Triage"), ("assistant", "Triage")]
    tool = conversations.transcript(conversation)[1]
    assert tool.status == "completed" and tool.data["result"] == "Yes: canopies."
    consult = providers.generation_requests()[1]
    assert "Is 'canopy' countable?" in consult.user_text
    assert set(tool_names(consult)) == {"current_time", "search_conversation", "search_references"}
    assert conversation.session.turns.filter(agent_name="Editing specialist").count() == 1


def test_follow_ups_carry_the_conversation_so_far(providers, enqueued, conversation, funded_owner, provider):
    on_model(conversation, provider)
    providers.reply("Your essay is about oak trees.")
    ask(conversation, funded_owner, "My essay is about oak trees.")
    providers.reply("You said oak trees.")
    ask(conversation, funded_owner, "What did I say my essay was about?")
    messages = json.dumps(providers.generation_requests()[1].json["messages"])
    assert "My essay is about oak trees." in messages and "Your essay is about oak trees." in messages


def test_regenerate_replaces_the_last_reply_and_keeps_the_old_one_hidden(
    providers, enqueued, conversation, funded_owner
):
    on_model(conversation, "anthropic")
    providers.reply("First answer.")
    ask(conversation, funded_owner, "Name a tree")
    providers.reply("Second answer.")
    conversations.regenerate_reply(conversation=conversation, user=funded_owner)
    assert runner.drive(conversation.session_id) == "finished"
    shown = conversations.transcript(conversation)
    assert [m.content for m in shown] == ["Name a tree", "Second answer."]
    assert conversation.messages.filter(superseded=True, content="First answer.").exists()
    assert conversation.session.turns.filter(status="completed").count() == 2  # both charged


def test_edit_the_last_message_and_rerun(providers, enqueued, conversation, funded_owner):
    on_model(conversation, "openai")
    providers.reply("Elms.")
    ask(conversation, funded_owner, "Name a tree with yellow leaves")
    providers.reply("Ginkgo.")
    conversations.edit_last_message(conversation=conversation, user=funded_owner, text="Name a tree with fan leaves")
    assert runner.drive(conversation.session_id) == "finished"
    assert [m.content for m in conversations.transcript(conversation)] == ["Name a tree with fan leaves", "Ginkgo."]
    assert "yellow" not in json.dumps(providers.generation_requests()[-1].json["messages"])


def test_stop_mid_reply_cancels_the_call_and_keeps_the_text(providers, enqueued, conversation, funded_owner, provider):
    on_model(conversation, provider)
    providers.tokens_per_second = 20
    providers.reply("word " * 400)
    conversations.send_message(conversation=conversation, user=funded_owner, text="Write a lot")
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.drive(conversation.session_id)))
    worker.start()
    deadline = time.monotonic() + 30
    while not SessionEvent.objects.filter(session=conversation.session, kind="chunk").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert conversations.stop_reply(conversation=conversation, user=funded_owner)
    worker.join(timeout=30)
    assert outcome == ["stopped"]
    reply = conversations.transcript(conversation)[-1]
    assert reply.role == "assistant" and reply.status == "stopped"
    assert reply.content.startswith("word") and len(reply.content) < len("word " * 400)
    conversation.session.refresh_from_db()
    assert conversation.session.status == Status.STOPPED
    assert providers.client_disconnected.wait(5)  # the HTTP stream was closed, not read to the end
    turn = Turn.objects.get(session=conversation.session)
    assert turn.status == "cancelled" and turn.output_text == reply.content
