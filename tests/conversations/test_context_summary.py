"""Follow-ups on a small-context model: the earliest exchanges are summarised (a charged call whose summary
is stored and reused), through the real anthropic and openai SDKs against the wire-level fake server."""

from __future__ import annotations

import json

import pytest

from orchestration.conversations import services as conversations
from orchestration.conversations.models import Conversation
from orchestration.models import Turn
from tests.conversations.conftest import ask, on_model

pytestmark = pytest.mark.django_db(transaction=True)

SUMMARY = "The writer is drafting an essay on oak trees for a city council."


def answer(request) -> str:
    if "running summary" in request.system_text:
        return SUMMARY
    return "Noted. " + "words " * 120


def summary_requests(fake) -> list:
    return [r for r in fake.generation_requests() if "running summary" in r.system_text]


def long_question(n: int) -> str:
    return f"Question {n}: " + "padding " * 300


def test_cut_exchanges_are_summarised_once_and_the_summary_is_sent_instead(
    providers, enqueued, conversation, funded_owner, provider
):
    on_model(conversation, provider, context_window=4_000)
    providers.default_reply = answer
    asked = 0
    while not summary_requests(providers):  # talk until the earliest exchanges no longer fit
        assert ask(conversation, funded_owner, long_question(asked)) == "finished"
        asked += 1
        assert asked < 8, "the conversation never outgrew the context window"
    # The summariser read the exchanges being cut, including the first one.
    assert "Question 0" in summary_requests(providers)[0].user_text
    reply_request = providers.generation_requests()[-1]
    sent = json.dumps(reply_request.json["messages"])
    assert SUMMARY in sent and "Question 0" not in sent
    assert f"Question {asked - 1}" in sent  # the current message goes in full
    conversation.refresh_from_db()
    assert conversation.summary == SUMMARY and conversation.summary_through >= 1
    # Charged like any call: its own turn, settled, with credits.
    summary_turn = Turn.objects.get(session=conversation.session, slot__contains=":summary:")
    assert summary_turn.status == "completed" and summary_turn.credits > 0 and summary_turn.input_tokens > 0
    # The page says it under the reply.
    reply = conversations.transcript(conversation)[-1]
    reply_turn = conversation.session.turns.exclude(slot__contains=":summary:").order_by("-pk").first()
    assert "summarised" in reply_turn.prompt_notes  # the streaming reply states it too
    count = 2 * conversation.summary_through
    assert reply.data["context_note"].startswith(f"Messages 1–{count} ")
    assert "summarised" in reply.data["context_note"]
    assert SUMMARY not in reply.content  # the summary is context, not a message
    # As the page renders them: the note under the saved reply, the summary call's line while it streams.
    from orchestration.conversations import live

    assert f"Messages 1–{count} " in live.message_html(reply)
    assert "summarising the earlier messages" in live.stream_html(summary_turn, "", "summary")

    # The next message reuses the stored summary: no second summariser call.
    before = len(providers.generation_requests())
    assert ask(conversation, funded_owner, "And one more short question") == "finished"
    assert len(providers.generation_requests()) == before + 1
    assert len(summary_requests(providers)) == 1
    assert SUMMARY in json.dumps(providers.generation_requests()[-1].json["messages"])


def test_more_cut_extends_the_summary_from_the_stored_one(providers, enqueued, conversation, funded_owner):
    on_model(conversation, "openai", context_window=4_000)
    providers.default_reply = answer
    for n in range(10):
        assert ask(conversation, funded_owner, long_question(n)) == "finished"
        if len(summary_requests(providers)) == 2:
            break
    requests = summary_requests(providers)
    assert len(requests) == 2, "the summary was never extended"
    # The second summary call starts from the first summary, not from the old messages again.
    assert SUMMARY in requests[1].user_text and "Question 0" not in requests[1].user_text
    first_through = Conversation.objects.get(pk=conversation.pk).summary_through
    assert first_through > 1


def test_a_failed_summary_falls_back_to_cutting_with_the_note(
    providers, enqueued, conversation, funded_owner, monkeypatch
):
    from tests.fakes.llm_server import GENERATION_PATHS, Fault

    on_model(conversation, "anthropic", context_window=4_000)
    providers.default_reply = answer
    record = providers._record

    def summariser_down(request):  # every summary request gets a 400; replies are served as usual
        if request.path in GENERATION_PATHS and "running summary" in request.system_text:
            with providers.lock:
                providers.faults.appendleft(Fault("status", status=400, message="summariser unavailable"))
        return record(request)

    monkeypatch.setattr(providers, "_record", summariser_down)
    asked = 0
    while not summary_requests(providers):
        assert ask(conversation, funded_owner, long_question(asked)) == "finished"
        asked += 1
        assert asked < 8
    # Nothing lost: the reply arrived, with the earliest exchanges cut and the page saying so.
    reply = conversations.transcript(conversation)[-1]
    assert reply.role == "assistant" and reply.content.startswith("Noted.")
    assert "left out to fit the model's context window" in reply.data["context_note"]
    reply_turn = conversation.session.turns.filter(agent_name="Triage").order_by("-pk").first()
    assert "left out to fit the model's context window" in reply_turn.prompt_notes  # stated while it streams
    sent = json.dumps(providers.generation_requests()[-1].json["messages"])
    assert "Question 0" not in sent and f"Question {asked - 1}" in sent
    failed = Turn.objects.get(session=conversation.session, slot__contains=":summary:")
    assert failed.status == "failed" and "cut instead" in failed.error
    assert Conversation.objects.get(pk=conversation.pk).summary == ""
    # The failed summary was one attempt: the reply did not wait on retries of it.
    assert len(summary_requests(providers)) == 1


def test_the_demo_provider_writes_an_honest_offline_summary(providers, enqueued, conversation, funded_owner):
    from orchestration.conversations import runner
    from orchestration.models import LLMModel

    LLMModel.objects.filter(provider="demo").update(context_window=4_000)
    for n in range(8):
        text = f"Note {n}: my essay is about oak trees in Leeds. " + "padding " * 300
        conversations.send_message(conversation=conversation, user=funded_owner, text=text)
        assert runner.drive(conversation.session_id) == "finished"
        conversation.refresh_from_db()
        if conversation.summary:
            break
    assert conversation.summary.startswith("Demo summary (offline, not a language model)")
    assert "The writer said: “Note 0: my essay is about oak trees in Leeds.”" in conversation.summary
    assert "The desk replied:" in conversation.summary
    reply = conversations.transcript(conversation)[-1]
    assert reply.role == "assistant" and "summarised" in reply.data["context_note"]
