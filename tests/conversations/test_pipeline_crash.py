"""A worker SIGKILLed mid-stage in a pipeline conversation: the reply resumes by itself at that stage, with no
duplicated or lost message, the stages finished before the crash neither repeated nor paid for twice (real
worker processes, the Demo provider streaming slowly)."""

from __future__ import annotations

from collections import Counter

import pytest

from billing.services import get_balance
from orchestration.conversations import services as conversations
from orchestration.models import Turn
from tests.conversations.conftest import assert_resumed_and_charged_once, kill_worker_mid_reply

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_worker_killed_mid_build_resumes_without_repeating_research_or_plan(chat, pro_owner):
    balance_before = get_balance(pro_owner)
    session = chat.session
    killed_at_seq = kill_worker_mid_reply(
        lambda: conversations.send_message(
            conversation=chat, user=pro_owner, text="Why do streets need trees for shade?"
        ),
        session,
        tokens_per_second="25",
        streaming_turn={"recipe": "build"},
        saved_chunks=2,
    )
    transcript = conversations.transcript(chat)
    assert [(m.role, m.data.get("stage") or m.agent_name) for m in transcript] == [
        ("user", ""),
        ("stage", "research"),
        ("stage", "plan"),
        ("stage", "build"),
        ("stage", "review"),
        ("assistant", "Builder"),
    ]
    assert transcript[-1].content.startswith("*Demo (offline, not a language model).*")
    turns = list(Turn.objects.filter(session=session))
    assert Counter((t.recipe, t.status) for t in turns) == {
        ("research", "completed"): 1,
        ("outline", "completed"): 1,
        ("build", "incomplete"): 1,
        ("build", "completed"): 1,
        ("review", "completed"): 1,
    }
    assert_resumed_and_charged_once(session, pro_owner, balance_before, killed_at_seq)
