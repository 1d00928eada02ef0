"""A sequential turn's end and the next turn's start commit in one transaction (engine._between_steps, issue 15).

Every way that transaction can go wrong keeps what a user would otherwise have: a turn the provider finished
is saved and charged once, unless saving it is what failed; the next turn's start is refused or fails on its
own; events stay numbered without gaps. Through the real SDKs and the fake server, on the test database.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from billing.services import get_balance
from orchestration import calls, engine, services, turns
from orchestration.drive_state import DeferredCompletion
from orchestration.models import DocumentVersion, SessionEvent, Status, StopReason, Turn
from orchestration.turns import INTERNAL_ERROR
from tests.orchestration.engine_helpers import counting_replies, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)


def started(owner, max_rounds: int = 2):
    session = two_agent_session(owner, max_rounds=max_rounds)
    services.start_session(session=session, user=owner)
    return session


def assert_events_gapless(session) -> None:
    seqs = list(SessionEvent.objects.filter(session=session).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    session.refresh_from_db()
    assert session.last_seq == len(seqs)


def assert_charged_exactly_the_turns(session, owner, balance_before: int) -> None:
    """Every credit spent is a saved turn's charge: no reservation left held, nothing charged twice."""
    session.refresh_from_db()
    charged = sum(Turn.objects.filter(session=session).values_list("credits", flat=True))
    assert session.credits_used == charged
    assert get_balance(owner) == balance_before - charged


def elsewhere(fn) -> None:
    """Run fn() as another process would: on a thread of its own with its own connection, committed at once."""
    from django.db import connection

    failures: list[BaseException] = []

    def run():
        try:
            fn()
        except BaseException as error:  # noqa: BLE001 - raised in the test's thread below
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    if failures:
        raise failures[0]


def raise_on_call(monkeypatch, target, name: str, number: int, error) -> None:
    """Patch target.<name> so that its call number `number` (from 1) raises error(*args, **kwargs) instead;
    every other call goes through to the original."""
    original = getattr(target, name)
    counted = itertools.count(1)

    def patched(*args, **kwargs):
        if next(counted) == number:
            raise error(*args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, patched)


def around_completions(monkeypatch, before_save):
    """Call before_save(turn_id, number) as each deferred completion is left for the next phase: the reply has
    ended, nothing of it is saved yet (number counts from 1)."""
    seen: list[int] = []

    def deferred(turn_id, text, save):
        seen.append(turn_id)
        before_save(turn_id, len(seen))
        return DeferredCompletion(turn_id, text, save)

    monkeypatch.setattr(calls, "DeferredCompletion", deferred)
    return seen


def test_a_refused_reservation_for_the_next_turn_keeps_the_finished_turn_saved_and_charged(
    providers, enqueued, rich_owner, monkeypatch
):
    from billing.services import adjust_credits

    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner)
    balance_before = get_balance(rich_owner)
    drained = []

    def drain(turn_id, number):
        # As the writer's reply ends, a staff correction takes every credit not held: the writer's settlement
        # gives back only what its reservation did not use, less than the editor's start must reserve, so the
        # balance's conditional UPDATE refuses it in the writer's completion's transaction.
        def take_all() -> None:
            drained.append(get_balance(rich_owner))
            adjust_credits(user=rich_owner, amount=-drained[0], reason="drained", staff_user=None)

        if number == 1:
            elsewhere(take_all)

    around_completions(monkeypatch, drain)
    assert engine.drive(session.pk) == "paused"

    session.refresh_from_db()
    assert (session.status, session.stop_reason) == (Status.PAUSED, StopReason.OUT_OF_CREDITS)
    writer = Turn.objects.get(session=session)  # the editor's turn was rolled back with its reservation
    assert (writer.agent_name, writer.status) == ("Writer", Turn.TurnStatus.COMPLETED)
    assert writer.credits > 0 and writer.output_text
    assert DocumentVersion.objects.filter(session=session).count() == 1
    assert session.document == DocumentVersion.objects.get(session=session).content
    assert_charged_exactly_the_turns(session, rich_owner, balance_before - drained[0])
    assert_events_gapless(session)
    kinds = list(SessionEvent.objects.filter(session=session).values_list("kind", flat=True))
    assert kinds.count("turn_started") == 1 and kinds.count("turn_finished") == 1


def test_a_stop_pressed_as_the_turn_ends_saves_it_and_starts_nothing(providers, enqueued, rich_owner, monkeypatch):
    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner)
    balance_before = get_balance(rich_owner)

    def press_stop(turn_id, number):
        if number == 1:  # the user presses Stop after the writer's reply ended, before it is saved
            elsewhere(lambda: services.stop_session(session=type(session).objects.get(pk=session.pk)))

    around_completions(monkeypatch, press_stop)
    assert engine.drive(session.pk) == "stopped"

    session.refresh_from_db()
    assert (session.status, session.stop_reason) == (Status.STOPPED, StopReason.USER_STOPPED)
    writer = Turn.objects.get(session=session)
    assert writer.status == Turn.TurnStatus.COMPLETED and writer.credits > 0
    assert session.final_document == DocumentVersion.objects.get(session=session).content  # the writer's draft
    assert_charged_exactly_the_turns(session, rich_owner, balance_before)
    assert_events_gapless(session)


def test_a_turn_already_ended_elsewhere_is_not_saved_again_and_the_run_goes_on(
    providers, enqueued, rich_owner, monkeypatch
):
    from billing.services import release_credits
    from orchestration.turns import turn_reservation_key

    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner, max_rounds=1)
    balance_before = get_balance(rich_owner)

    def ended_elsewhere(turn_id, number):
        if number == 1:  # e.g. staff failed the turn meanwhile: its reservation released, its row not streaming

            def end_it():
                Turn.objects.filter(pk=turn_id).update(status=Turn.TurnStatus.FAILED, error="ended elsewhere")
                release_credits(user=rich_owner, reservation_key=turn_reservation_key(turn_id), key=f"t:{turn_id}:r")

            elsewhere(end_it)

    around_completions(monkeypatch, ended_elsewhere)
    assert engine.drive(session.pk) == "finished"

    # The drive reads the turns afresh: the writer's call is made again (the flow does not take the ended turn
    # for a done one and plan the same call over and over), then the editor's.
    ended, writer, editor = Turn.objects.filter(session=session).order_by("pk")
    assert (ended.status, ended.credits, ended.error) == (Turn.TurnStatus.FAILED, 0, "ended elsewhere")
    assert [(t.agent_name, t.attempt, t.status) for t in (writer, editor)] == [
        ("Writer", 2, Turn.TurnStatus.COMPLETED),
        ("Editor", 1, Turn.TurnStatus.COMPLETED),
    ]
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    # The ended turn's completion added nothing to the totals.
    assert session.output_tokens == writer.output_tokens + editor.output_tokens
    assert_charged_exactly_the_turns(session, rich_owner, balance_before)
    assert_events_gapless(session)


def test_a_failure_saving_the_turn_fails_it_with_its_text_and_releases_its_credits(
    providers, enqueued, rich_owner, monkeypatch
):
    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner)
    balance_before = get_balance(rich_owner)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug while recording the version")

    monkeypatch.setattr(turns, "_record_new_version", broken)
    assert engine.drive(session.pk) == "failed"

    session.refresh_from_db()
    assert session.status == Status.FAILED and session.stop_reason == StopReason.ERROR
    writer = Turn.objects.get(session=session)
    assert (writer.status, writer.error) == (Turn.TurnStatus.FAILED, INTERNAL_ERROR)
    assert writer.output_text.startswith("# Why cities need trees")  # what streamed is kept
    assert not DocumentVersion.objects.filter(session=session).exists()
    assert get_balance(rich_owner) == balance_before and session.credits_used == 0  # released, nothing charged
    assert_events_gapless(session)
    finished = SessionEvent.objects.filter(session=session, kind="turn_finished")
    assert [event.payload["status"] for event in finished] == [Turn.TurnStatus.FAILED]


def test_a_failure_planning_the_next_step_never_undoes_the_saved_turn(providers, enqueued, rich_owner, monkeypatch):
    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner)
    balance_before = get_balance(rich_owner)
    # The second check plans the editor's step, after the writer's completion in the same phase.
    raise_on_call(monkeypatch, engine, "check_before_step", 2, lambda row: RuntimeError("a bug while planning"))
    with pytest.raises(RuntimeError, match="a bug while planning"):
        engine.drive(session.pk)

    writer = Turn.objects.get(session=session)
    assert writer.status == Turn.TurnStatus.COMPLETED and writer.credits > 0
    assert DocumentVersion.objects.filter(session=session).count() == 1
    assert_charged_exactly_the_turns(session, rich_owner, balance_before)
    assert_events_gapless(session)


def test_a_failure_starting_the_next_turn_rolls_back_only_that_start(providers, enqueued, rich_owner, monkeypatch):
    providers.reply(*[counting_replies()] * 4)
    session = started(rich_owner)
    balance_before = get_balance(rich_owner)
    # The second turn_started event is the editor's start: its turn row and reservation are already written.
    bug = RuntimeError("a bug while starting the turn")
    raise_on_call(monkeypatch, turns, "_started_event", 2, lambda begun, turn_id: bug)
    assert engine.drive(session.pk) == "failed"

    session.refresh_from_db()
    assert session.status == Status.FAILED and session.stop_detail == INTERNAL_ERROR
    writer = Turn.objects.get(session=session)  # the editor's row went with its rolled-back start
    assert writer.status == Turn.TurnStatus.COMPLETED and writer.credits > 0
    assert DocumentVersion.objects.filter(session=session).count() == 1
    assert_charged_exactly_the_turns(session, rich_owner, balance_before)
    assert_events_gapless(session)
