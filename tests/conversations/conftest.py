"""Fixtures and helpers for conversation tests: a project, a funded owner, providers pointed at the fake server,
a team on a priced model of either SDK, a pipeline conversation with indexed references, and the steps of a
worker killed mid-reply (test_crash, test_pipeline_crash)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Sum

from billing.models import CreditEntry
from billing.services import get_balance, grant_credits
from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import (
    LLMModel,
    Project,
    ReferenceDocument,
    SessionEvent,
    Status,
    Turn,
    WritingSession,
)
from orchestration.retrieval import index_references
from tests.live import start_worker, wait_for

PROVIDERS = {"anthropic": "claude-test", "openai": "gpt-4.1-test"}

NOTES = (
    "# Shade\n\nStreet trees cut summer surface temperatures by up to 11 degrees in dense neighbourhoods.\n\n"
    "# Storm water\n\nA mature oak intercepts about 4,000 litres of rain a year, easing storm drains."
)


@pytest.fixture
def providers(fake_llm, settings):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_TIMEOUT_SECONDS = 3
    settings.DEMO_TOKENS_PER_SECOND = 0
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request):
    """Each SDK in turn: "anthropic", then "openai"."""
    return request.param


@pytest.fixture
def funded_owner(owner):
    from orchestration.catalogue import seed_catalogue

    seed_catalogue()  # transactional tests flush the seeded catalogue: the Demo model comes back here
    grant_credits(user=owner, amount=100_000, key="test:topup", description="test credits")
    return owner


@pytest.fixture
def pro_owner(funded_owner):
    """The funded owner on the Pro plan (the pipeline flow needs it)."""
    from billing.plans import PRO
    from billing.services import get_account

    account = get_account(funded_owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    return funded_owner


@pytest.fixture
def project(funded_owner):
    return Project.objects.create(owner=funded_owner, name="Urban trees")


@pytest.fixture
def conversation(project, funded_owner):
    return conversations.create_conversation(project=project, user=funded_owner)


@pytest.fixture
def references(project):
    """NOTES as a reference of another session of the project, indexed for the research stage's search."""
    source = WritingSession.objects.create(project=project, title="Essay", brief="Trees")
    reference = ReferenceDocument.objects.create(session=source, title="Tree notes", content=NOTES)
    index_references([reference])
    return reference


@pytest.fixture
def chat(project, pro_owner, references):
    """A pipeline conversation (the Pipeline desk preset) of the Pro owner, with the references indexed."""
    return conversations.create_conversation(project=project, user=pro_owner, preset="pipeline-desk")


def on_model(conversation, provider: str, **model_fields: Any) -> LLMModel:
    """Put the whole team on one priced model of `provider` (served by the fake server)."""
    model, _ = LLMModel.objects.update_or_create(
        provider=provider,
        model_id=PROVIDERS[provider],
        defaults={
            "display_name": PROVIDERS[provider],
            "context_window": 200_000,
            "input_price_per_mtok": Decimal("1"),
            "cached_input_price_per_mtok": Decimal("0.1"),
            "output_price_per_mtok": Decimal("4"),
            "enabled": True,
            **model_fields,
        },
    )
    conversation.session.agents.update(model=model)
    return model


def tool_names(request) -> list[str]:
    """The names of the tools a generation request offered (either SDK's shape)."""
    tools = (request.json or {}).get("tools") or []
    return [t.get("name") or t["function"]["name"] for t in tools]


def ask(conversation, user, text: str) -> str:
    """Send `text` and drive the reply in this process; returns the runner's outcome."""
    conversations.send_message(conversation=conversation, user=user, text=text)
    return runner.drive(conversation.session_id)


def kill_worker_mid_reply(
    send: Callable[[], object],
    session: WritingSession,
    *,
    tokens_per_second: str,
    streaming_turn: dict[str, str],
    saved_chunks: int,
) -> int:
    """Start a worker streaming the Demo at `tokens_per_second`, `send` a message, SIGKILL the worker once
    `saved_chunks` chunk events of the turn matching `streaming_turn` (Turn filters) are saved, check that
    turn was still streaming, then start a fast worker and wait until the run completes.

    Returns the run's last event number at the kill."""
    worker = start_worker(DEMO_TOKENS_PER_SECOND=tokens_per_second, ENGINE_LEASE_SECONDS="5")
    chunks = {f"turn__{name}": value for name, value in streaming_turn.items()}
    try:
        send()
        wait_for(
            lambda: SessionEvent.objects.filter(session=session, kind="chunk", **chunks).count() >= saved_chunks,
            timeout=120,
            message="the reply streaming",
        )
        worker.kill_group()
        killed = Turn.objects.get(session=session, **streaming_turn)
        assert killed.status == Turn.TurnStatus.STREAMING  # it died mid-reply
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
    return killed_at_seq


def assert_resumed_and_charged_once(session: WritingSession, owner, balance_before: int, killed_at_seq: int) -> None:
    """After kill_worker_mid_reply: the reply streamed again after the kill, the interrupted turn was charged
    nothing and says why, and every other turn was charged once (run totals, balance and ledger agree)."""
    assert SessionEvent.objects.filter(session=session, kind="chunk", seq__gt=killed_at_seq).exists()
    turns = list(Turn.objects.filter(session=session))
    interrupted = next(t for t in turns if t.status == "incomplete")
    assert interrupted.credits == 0 and "stopped responding" in interrupted.error
    session.refresh_from_db()
    charged = sum(t.credits for t in turns)
    assert session.credits_used == charged and get_balance(owner) == balance_before - charged
    keys = list(CreditEntry.objects.filter(user=owner).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    assert CreditEntry.objects.filter(user=owner).aggregate(t=Sum("amount"))["t"] == get_balance(owner)
