"""A worker SIGKILLed mid-reply: the conversation's reply resumes by itself, with no duplicated or lost
message and nothing charged twice (real daphne-free worker processes, the Demo provider streaming slowly)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Sum

from billing.models import CreditEntry
from billing.services import get_balance
from orchestration.conversations import services as conversations
from orchestration.models import SessionEvent, Status, Turn, WritingSession
from tests.live import start_worker, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_worker_killed_mid_reply_resumes_without_a_duplicated_or_lost_message(conversation, funded_owner):
    balance_before = get_balance(funded_owner)
    # Slow: streamed text is saved about once a second (quiet streaming), so three saved chunk events
    # take ~3 s and the reply must still be streaming then.
    worker = start_worker(DEMO_TOKENS_PER_SECOND="5", ENGINE_LEASE_SECONDS="5")
    try:
        conversations.send_message(conversation=conversation, user=funded_owner, text="Hello, what can the desk do?")
        session = conversation.session
        wait_for(
            lambda: SessionEvent.objects.filter(session=session, kind="chunk").count() >= 3,
            timeout=60,
            message="the reply streaming",
        )
        worker.kill_group()
        turn = Turn.objects.get(session=session)
        assert turn.status == Turn.TurnStatus.STREAMING  # it died mid-reply
        killed_at_seq = WritingSession.objects.get(pk=session.pk).last_seq

        worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
        wait_for(
            lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED,
            timeout=90,
            interval=0.2,
            message="the reply to complete after the restart",
        )
    finally:
        worker.stop()
    assert SessionEvent.objects.filter(session=session, kind="chunk", seq__gt=killed_at_seq).exists()
    transcript = conversations.transcript(conversation)
    assert [(m.role, m.agent_name) for m in transcript] == [("user", ""), ("assistant", "Triage")]
    assert "Demo (offline, not a language model)" in transcript[1].content
    turns = list(Turn.objects.filter(session=session))
    assert Counter(t.status for t in turns) == {"incomplete": 1, "completed": 1}
    interrupted = next(t for t in turns if t.status == "incomplete")
    assert interrupted.credits == 0 and "stopped responding" in interrupted.error
    session.refresh_from_db()
    charged = sum(t.credits for t in turns)
    assert session.credits_used == charged and get_balance(funded_owner) == balance_before - charged
    keys = list(CreditEntry.objects.filter(user=funded_owner).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    assert CreditEntry.objects.filter(user=funded_owner).aggregate(t=Sum("amount"))["t"] == get_balance(funded_owner)
