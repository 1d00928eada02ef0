"""atelier.core.sql: the plain UPDATE and INSERT the engine's hottest writes use write what the ORM would.

Each test reads the row back through the ORM, on whichever database the suite runs (SQLite and PostgreSQL
in CI): JSON, decimals, times, defaults and auto_now_add must come back as Model.save() leaves them.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from atelier.core.sql import create_rows, insert_rows, update_row
from orchestration.models import Project, SessionEvent, Turn, WritingSession

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner):
    project = Project.objects.create(owner=owner, name="P")
    return WritingSession.objects.create(project=project, title="S", brief="b")


def test_inserted_rows_read_back_as_the_orm_saves_them(session):
    before = timezone.now()
    events = create_rows(
        SessionEvent,
        [
            {"session_id": session.pk, "seq": 1, "kind": "chunk", "payload": {"text": "é <b>", "n": [1, 2.5]}},
            {"session_id": session.pk, "seq": 2, "kind": "status", "payload": {}},
        ],
    )
    saved = list(SessionEvent.objects.filter(session=session).order_by("seq"))
    assert [e.pk for e in events] == [e.pk for e in saved]  # the primary keys in the rows' order
    assert saved[0].payload == {"text": "é <b>", "n": [1, 2.5]} and saved[1].payload == {}
    assert saved[0].turn_id is None  # an omitted nullable field
    assert before <= saved[0].created_at <= timezone.now()  # auto_now_add stamped
    assert events[0].created_at == saved[0].created_at and not events[0]._state.adding


def test_an_insert_fills_in_every_omitted_default(session):
    (turn,) = create_rows(Turn, [{"session_id": session.pk, "round": 2, "agent_name": "Writer"}])
    saved = Turn.objects.get(pk=turn.pk)
    assert (saved.status, saved.attempt, saved.recipe, saved.scores, saved.credits) == (
        Turn.TurnStatus.STREAMING,
        1,
        "revise",
        {},
        0,
    )
    assert saved.output_text == "" and saved.overall_score is None


def test_an_update_sets_adds_and_returns_what_it_wrote(session):
    (turn,) = create_rows(Turn, [{"session_id": session.pk, "round": 1}])
    finished = timezone.now() + timedelta(seconds=3)
    wrote = update_row(
        Turn,
        where={"id": turn.pk, "status": Turn.TurnStatus.STREAMING},
        set_fields={"status": "completed", "scores": {"Clarity": 8.5}, "provider_cost": Decimal("0.0012")},
        add_fields={"credits": 7},
    )
    assert wrote == {}
    saved = Turn.objects.get(pk=turn.pk)
    assert (saved.status, saved.scores, saved.provider_cost, saved.credits) == (
        "completed",
        {"Clarity": 8.5},
        Decimal("0.0012"),
        7,
    )
    # The condition no longer holds: nothing written, None.
    assert update_row(Turn, where={"id": turn.pk, "status": "streaming"}, set_fields={"finished_at": finished}) is None
    assert Turn.objects.get(pk=turn.pk).finished_at is None
    row = update_row(WritingSession, where={"id": session.pk}, add_fields={"last_seq": 3}, returning=("last_seq",))
    assert row == {"last_seq": 3}


def test_unknown_names_and_ragged_rows_are_refused_before_any_statement(session):
    with pytest.raises(ValueError, match="Not fields of Turn"):
        update_row(Turn, where={"id": 1}, set_fields={"status; DROP TABLE x": "a"})
    with pytest.raises(ValueError, match="same fields"):
        insert_rows(SessionEvent, [{"session_id": session.pk, "seq": 1, "kind": "a"}, {"session_id": session.pk}])
    assert insert_rows(SessionEvent, []) == [] and not SessionEvent.objects.exists()


def test_a_taken_unique_key_raises_the_orms_integrity_error(session):
    row = {"session_id": session.pk, "seq": 1, "kind": "status", "payload": {}}
    insert_rows(SessionEvent, [row])
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows(SessionEvent, [row])
    assert SessionEvent.objects.filter(session=session).count() == 1
