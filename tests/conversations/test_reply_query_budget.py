"""A conversation reply's database cost (docs/benchmarks.md, "Conversations"): the statements the runner
sends for a reply answered by triage (one model call), counted on every connection and thread, through the
real anthropic SDK against the fake server. Transaction framing (BEGIN) is not counted, as in
tests/orchestration/test_query_budget.py."""

from __future__ import annotations

import pytest

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from tests.conversations.conftest import on_model
from tests.statements import record_statements

pytestmark = pytest.mark.django_db(transaction=True)

REPLY_BUDGET = 41  # one call answered by triage (53 before the runner kept what it had read, 66 in the bench)
HANDOFF_BUDGET = 69  # two calls: triage hands off, the specialist answers


@pytest.fixture
def recorder(monkeypatch, settings):
    # The fake answers at once; keep lease renewals out of a reply's count (they are per second of streaming).
    monkeypatch.setattr("orchestration.engine.MONITOR_INTERVAL", 60)
    return record_statements(monkeypatch)


def counted_reply(recorder, conversation, user, text: str) -> list[tuple[str, str]]:
    conversations.send_message(conversation=conversation, user=user, text=text)
    recorder.statements.clear()
    recorder.on = True
    try:
        assert runner.drive(conversation.session_id) == "finished"
    finally:
        recorder.on = False
    return list(recorder.statements)


def listing(statements) -> str:
    return "\n".join(f"{thread}: {sql[:160]}" for thread, sql in statements)


def test_a_reply_stays_within_its_statement_budget(providers, enqueued, conversation, funded_owner, recorder):
    on_model(conversation, "anthropic")
    providers.reply("Happy to help.")
    counted_reply(recorder, conversation, funded_owner, "Hello")  # the first reply warms the caches
    providers.reply("Oak trees, as you said.")
    answered = counted_reply(recorder, conversation, funded_owner, "What was my essay about?")
    assert conversations.transcript(conversation)[-1].content == "Oak trees, as you said."
    assert len(answered) <= REPLY_BUDGET, f"{len(answered)} statements for one reply:\n{listing(answered)}"

    providers.reply("", tool_calls=[{"name": "transfer_to_research_specialist", "arguments": {"reason": "sources"}}])
    providers.reply("Three sources.")
    handed = counted_reply(recorder, conversation, funded_owner, "I need sources")
    assert conversations.transcript(conversation)[-1].content == "Three sources."
    assert len(handed) <= HANDOFF_BUDGET, f"{len(handed)} statements for a handed-off reply:\n{listing(handed)}"
