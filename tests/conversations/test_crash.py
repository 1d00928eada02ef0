"""A worker SIGKILLed mid-reply: the conversation's reply resumes by itself, with no duplicated or lost
message and nothing charged twice (real daphne-free worker processes, the Demo provider streaming slowly)."""

from __future__ import annotations

from collections import Counter

import pytest

from billing.services import get_balance
from orchestration.conversations import services as conversations
from orchestration.models import Turn
from tests.conversations.conftest import assert_resumed_and_charged_once, kill_worker_mid_reply

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_worker_killed_mid_reply_resumes_without_a_duplicated_or_lost_message(conversation, funded_owner):
    balance_before = get_balance(funded_owner)
    session = conversation.session
    # Slow: streamed text is saved about once a second (quiet streaming), so three saved chunk events
    # take ~3 s and the reply must still be streaming then.
    killed_at_seq = kill_worker_mid_reply(
        lambda: conversations.send_message(
            conversation=conversation, user=funded_owner, text="Hello, what can the desk do?"
        ),
        session,
        tokens_per_second="5",
        streaming_turn={},
        saved_chunks=3,
    )
    transcript = conversations.transcript(conversation)
    assert [(m.role, m.agent_name) for m in transcript] == [("user", ""), ("assistant", "Triage")]
    assert "Demo (offline, not a language model)" in transcript[1].content
    turns = list(Turn.objects.filter(session=session))
    assert Counter(t.status for t in turns) == {"incomplete": 1, "completed": 1}
    assert_resumed_and_charged_once(session, funded_owner, balance_before, killed_at_seq)
