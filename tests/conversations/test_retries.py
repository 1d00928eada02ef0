"""A conversation call the provider fails: retried as the next attempt of the same turn round (numbered from
the run's last turn), charged once, and when retries run out the reply ends with a note saying why."""

from __future__ import annotations

import pytest

from orchestration.conversations import services as conversations
from orchestration.models import Status, StopReason, Turn
from tests.conversations.conftest import ask, on_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_retries(settings, monkeypatch):
    settings.PROVIDER_MAX_RETRIES = 2
    monkeypatch.setattr("orchestration.providers.retry.retry_delay", lambda attempt, retry_after=None: 0.01)


def test_a_broken_stream_is_retried_as_the_next_attempt_and_the_reply_arrives_once(
    providers, enqueued, conversation, funded_owner, provider, fast_retries
):
    on_model(conversation, provider)
    providers.disconnect_next(after_chunks=3)
    providers.reply("A first try that breaks off.", "Here is the whole answer.")
    assert ask(conversation, funded_owner, "Hello") == "finished"

    assert [(m.role, m.content) for m in conversations.transcript(conversation)] == [
        ("user", "Hello"),
        ("assistant", "Here is the whole answer."),
    ]
    first, second = Turn.objects.filter(session=conversation.session).order_by("attempt")
    assert (first.round, first.attempt, first.status) == (1, 1, Turn.TurnStatus.INCOMPLETE)
    assert first.output_text  # the text that arrived before the break is kept on the turn
    assert (second.round, second.attempt, second.status) == (1, 2, Turn.TurnStatus.COMPLETED)
    session = conversation.session
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert session.credits_used == first.credits + second.credits and second.credits > 0


def test_errors_past_the_retries_end_the_reply_with_a_note_and_charge_nothing(
    providers, enqueued, conversation, funded_owner, fast_retries
):
    on_model(conversation, "anthropic")
    for _ in range(3):  # the first attempt and both retries
        providers.fail_next(500)
    assert ask(conversation, funded_owner, "Hello") == "failed"

    shown = conversations.transcript(conversation)
    assert [(m.role, m.status) for m in shown] == [("user", "completed"), ("note", "failed")]
    assert shown[-1].content.startswith("Triage could not answer.") and shown[-1].data["kind"] == "failed"
    turns = list(Turn.objects.filter(session=conversation.session).order_by("attempt"))
    assert [(t.round, t.attempt, t.status) for t in turns] == [(1, n, Turn.TurnStatus.FAILED) for n in (1, 2, 3)]
    session = conversation.session
    session.refresh_from_db()
    assert session.status == Status.FAILED and session.stop_reason == StopReason.ERROR
    assert session.credits_used == 0 and all(t.credits == 0 for t in turns)
