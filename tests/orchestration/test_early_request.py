"""Issue 15: a turn's provider request goes out while the turn is being recorded (calls.EarlyStream).

The request is sent from begin_turn's database phase, before its transaction, so the provider's answer and
the transaction overlap. Nothing received is shown or saved before the turn exists; a turn that is never
recorded (out of credits, a lost lease) cancels its request unread and charges nothing.
Through the real SDKs against the fake server, on the real database.
"""

from __future__ import annotations

import time

import pytest

from billing.services import adjust_credits, get_account, get_balance
from orchestration import engine, services, turns
from orchestration.models import SessionEvent, Status, StopReason, Turn, WritingSession
from tests.orchestration.engine_helpers import counting_replies, on_pro_plan, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)


def _start(session, user) -> None:
    services.start_session(session=session, user=user)


def _received(providers, wanted: int) -> bool:
    """Wait until the fake provider has `wanted` generation requests (the first also imports and builds the
    provider's SDK client, seconds on a busy machine); whether it has them."""
    deadline = time.monotonic() + 30
    while len(providers.generation_requests()) < wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(providers.generation_requests()) >= wanted


def _after_the_request(providers, monkeypatch, before_recording=lambda: None) -> list[bool]:
    """Make each turn's transaction wait until the provider has the turn's request, then run
    `before_recording()`: returns, per turn, whether the request had arrived (it never would if the request
    were only sent once the turn exists)."""
    arrived: list[bool] = []
    original = turns._create_and_reserve

    def record_after_the_request(*args, **kwargs):
        arrived.append(_received(providers, len(arrived) + 1))
        before_recording()
        return original(*args, **kwargs)

    monkeypatch.setattr(turns, "_create_and_reserve", record_after_the_request)
    return arrived


def test_the_request_is_on_the_wire_before_its_turn_is_recorded(providers, enqueued, rich_owner, monkeypatch):
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(rich_owner, max_rounds=2)
    seen_before_recording = _after_the_request(providers, monkeypatch)
    _start(session, rich_owner)
    assert engine.drive(session.pk) == "finished"

    assert seen_before_recording == [True] * 4
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    done = list(Turn.objects.filter(session=session).order_by("pk"))
    assert [t.status for t in done] == [Turn.TurnStatus.COMPLETED] * 4
    # What the page shows stays in order: each turn's text comes after its turn_started, numbered without gaps.
    events = list(SessionEvent.objects.filter(session=session).order_by("seq").values_list("seq", "kind", "turn_id"))
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    for turn in done:
        kinds = [kind for _, kind, turn_id in events if turn_id == turn.pk]
        assert kinds[0] == "turn_started" and "turn_finished" in kinds
        assert "chunk" not in kinds[: kinds.index("turn_started")]
    # The time to the first token counts from when the request went out, as the provider sees it.
    assert all(t.ttft_ms is not None and 0 <= t.ttft_ms <= t.latency_ms for t in done)


def test_a_refused_reservation_cancels_the_request_unread_and_charges_nothing(providers, enqueued, owner, monkeypatch):
    on_pro_plan(owner)
    providers.stall_next(after_chunks=1)  # a reply that would hang the run if anyone waited for it
    session = two_agent_session(owner, max_rounds=2)
    adjust_credits(user=owner, amount=-get_account(owner).balance, reason="test", staff_user=None)
    arrived = _after_the_request(providers, monkeypatch)
    _start(session, owner)

    assert engine.drive(session.pk) == "paused"

    session.refresh_from_db()
    assert session.status == Status.PAUSED
    assert session.stop_reason == StopReason.OUT_OF_CREDITS
    assert not Turn.objects.filter(session=session).exists()
    assert get_balance(owner) == 0
    assert not SessionEvent.objects.filter(session=session, kind__in=("chunk", "turn_started")).exists()
    # The request went out with the turn's recording and was closed unread, not left hanging.
    assert arrived == [True]
    assert len(providers.generation_requests()) == 1
    assert providers.client_disconnected.wait(5)


def test_a_lease_lost_while_recording_cancels_the_request_and_writes_nothing(
    providers, enqueued, rich_owner, monkeypatch
):
    providers.stall_next(after_chunks=1)
    session = two_agent_session(rich_owner, max_rounds=2)
    balance = get_balance(rich_owner)

    def taken_over():  # another executor took the session over while this one was building the prompt
        WritingSession.objects.filter(pk=session.pk).update(lease_owner="elsewhere:1:abc")

    arrived = _after_the_request(providers, monkeypatch, taken_over)
    _start(session, rich_owner)

    assert engine.drive(session.pk) == "lease_lost"

    assert arrived == [True]
    assert not Turn.objects.filter(session=session).exists()
    assert get_balance(rich_owner) == balance
    assert providers.client_disconnected.wait(5)
