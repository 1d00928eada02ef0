"""A worker SIGKILLed mid-stage in a pipeline conversation: the reply resumes by itself at that stage, with no
duplicated or lost message, the stages finished before the crash neither repeated nor paid for twice (real
worker processes, the Demo provider streaming slowly)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Sum

from billing.models import CreditEntry
from billing.services import get_balance
from orchestration.conversations import services as conversations
from orchestration.models import ReferenceDocument, SessionEvent, Status, Turn, WritingSession
from orchestration.retrieval import index_references
from tests.live import start_worker, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

NOTES = (
    "# Shade\n\nStreet trees cut summer surface temperatures by up to 11 degrees in dense neighbourhoods.\n\n"
    "# Storm water\n\nA mature oak intercepts about 4,000 litres of rain a year, easing storm drains."
)


def test_worker_killed_mid_build_resumes_without_repeating_research_or_plan(project, funded_owner):
    from billing.plans import PRO
    from billing.services import get_account

    account = get_account(funded_owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    source = WritingSession.objects.create(project=project, title="Essay", brief="Trees")
    index_references([ReferenceDocument.objects.create(session=source, title="Tree notes", content=NOTES)])
    chat = conversations.create_conversation(project=project, user=funded_owner, preset="pipeline-desk")
    balance_before = get_balance(funded_owner)
    worker = start_worker(DEMO_TOKENS_PER_SECOND="25", ENGINE_LEASE_SECONDS="5")
    try:
        conversations.send_message(conversation=chat, user=funded_owner, text="Why do streets need trees for shade?")
        session = chat.session
        wait_for(
            lambda: SessionEvent.objects.filter(session=session, kind="chunk", turn__recipe="build").count() >= 2,
            timeout=120,
            message="the build stage streaming",
        )
        worker.kill_group()
        build = Turn.objects.get(session=session, recipe="build")
        assert build.status == Turn.TurnStatus.STREAMING  # it died mid-stage
        killed_at_seq = WritingSession.objects.get(pk=session.pk).last_seq

        worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
        wait_for(
            lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED,
            timeout=120,
            interval=0.2,
            message="the reply to complete after the restart",
        )
    finally:
        worker.stop()
    assert SessionEvent.objects.filter(session=session, kind="chunk", seq__gt=killed_at_seq).exists()
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
    interrupted = next(t for t in turns if t.status == "incomplete")
    assert interrupted.credits == 0 and "stopped responding" in interrupted.error
    session.refresh_from_db()
    charged = sum(t.credits for t in turns)
    assert session.credits_used == charged and get_balance(funded_owner) == balance_before - charged
    keys = list(CreditEntry.objects.filter(user=funded_owner).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    assert CreditEntry.objects.filter(user=funded_owner).aggregate(t=Sum("amount"))["t"] == get_balance(funded_owner)
