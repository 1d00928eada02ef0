"""`reconcile_credits` finds reservations nothing will ever close, and with --fix releases them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import services
from billing.models import CreditEntry
from orchestration.models import Status, Turn
from tests.orchestration.engine_helpers import two_agent_session

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = StringIO()
    call_command("reconcile_credits", *args, stdout=out)
    return out.getvalue()


def _turn_with_reservation(session, *, status: str, amount: int = 40) -> Turn:
    agent = session.agents.first()
    attempt = Turn.objects.filter(session=session).count() + 1
    turn = Turn.objects.create(
        session=session, round=1, agent=agent, agent_name=agent.name, status=status, attempt=attempt
    )
    services.reserve_credits(
        user=session.project.owner, amount=amount, key=f"turn:{turn.pk}:reserve", session_id=session.pk, turn_id=turn.pk
    )
    return turn


@pytest.fixture
def funded(owner):
    services.grant_credits(user=owner, amount=1_000, key="test:funds")
    return owner


def test_orphaned_reservations_are_reported_and_released_with_fix(funded):
    start = services.get_balance(funded)
    session = two_agent_session(funded)
    session.status = Status.FAILED
    session.save()
    ended = _turn_with_reservation(session, status=Turn.TurnStatus.FAILED, amount=40)  # turn terminal
    stuck = _turn_with_reservation(session, status=Turn.TurnStatus.STREAMING, amount=25)  # session finished
    balance = services.get_balance(funded)
    assert balance == start - 65

    with pytest.raises(CommandError):
        _run()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("reconcile_credits", "--dry-run", stdout=out)
    report = out.getvalue()
    assert f"turn:{ended.pk}:reserve holds 40 credits, but its turn is failed" in report
    assert f"turn:{stuck.pk}:reserve holds 25 credits, but its turn is still streaming but the session is failed" in (
        report
    )
    assert "2 orphaned reservation(s), 0 released." in report
    assert services.get_balance(funded) == balance  # a report changes nothing

    fixed = _run("--fix")

    assert "2 orphaned reservation(s), 2 released." in fixed and "0 account(s) with drift" in fixed
    assert services.get_balance(funded) == start
    stuck.refresh_from_db()
    assert stuck.status == Turn.TurnStatus.FAILED and stuck.error  # no turn is left outside a terminal state
    assert CreditEntry.objects.filter(reservation_key=f"turn:{ended.pk}:reserve").count() == 1
    assert "0 orphaned reservation(s)" in _run()  # and a second run finds nothing


def test_a_reservation_in_flight_is_not_an_orphan(funded):
    session = two_agent_session(funded)
    session.status = Status.RUNNING
    session.save()
    _turn_with_reservation(session, status=Turn.TurnStatus.STREAMING)

    assert "0 orphaned reservation(s), 0 released." in _run()


def test_a_closed_reservation_and_a_deleted_turns_reservation(funded):
    start = services.get_balance(funded)
    session = two_agent_session(funded)
    session.status = Status.COMPLETED
    session.save()
    settled = _turn_with_reservation(session, status=Turn.TurnStatus.COMPLETED)
    services.settle_credits(
        user=funded, reservation_key=f"turn:{settled.pk}:reserve", actual=10, key=f"turn:{settled.pk}:settle"
    )
    gone = _turn_with_reservation(session, status=Turn.TurnStatus.FAILED, amount=30)
    gone_key = f"turn:{gone.pk}:reserve"
    gone.delete()

    out = StringIO()
    with pytest.raises(CommandError):
        call_command("reconcile_credits", stdout=out)
    assert f"{gone_key} holds 30 credits, but its turn no longer exists" in out.getvalue()
    assert "1 orphaned reservation(s)" in out.getvalue()
    assert "1 orphaned reservation(s), 1 released." in _run("--fix")
    assert services.get_balance(funded) == start - 10


def test_a_team_suggestion_reservation_left_open_by_a_dead_process_is_released_only_when_stale(funded):
    import datetime as dt

    from django.utils import timezone

    key = "suggest:7:deadbeef:1:reserve"
    before = services.get_balance(funded)
    services.reserve_credits(user=funded, amount=120, key=key, description="team suggestion")
    assert services.get_balance(funded) == before - 120
    assert "0 orphaned reservation(s)" in _run()  # the call may still be running
    CreditEntry.objects.filter(idempotency_key=key).update(created_at=timezone.now() - dt.timedelta(hours=1))
    report = _run("--fix")
    assert f"reservation {key} holds 120 credits, but a team suggestion call never settled it" in report
    assert services.get_balance(funded) == before
    assert "0 orphaned reservation(s)" in _run()  # released once
