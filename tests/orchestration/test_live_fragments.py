"""The WebSocket fragments rebuild streamed text exactly once, whatever order messages arrive in."""

from __future__ import annotations

import pytest

from orchestration import events as ev
from orchestration.live import render_fragments
from orchestration.models import Turn
from tests.orchestration.engine_helpers import two_agent_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def streaming_turn(owner):
    session = two_agent_session(owner)
    agent = session.agents.first()
    turn = Turn.objects.create(session=session, round=1, agent=agent, agent_name=agent.name)
    started = ev.append_event(session_id=session.pk, kind="turn_started", payload={"round": 1}, turn_id=turn.pk)
    chunks = [
        ev.append_event(session_id=session.pk, kind="chunk", payload={"text": text}, turn_id=turn.pk)
        for text in ["Alpha ", "beta ", "gamma"]
    ]
    return session, turn, started, chunks


def body_html(fragments, turn) -> str:
    for fragment in fragments:
        if fragment["target"] in (f"turn-{turn.pk}-body", f"turn-{turn.pk}"):
            return fragment["html"]
    raise AssertionError("no fragment for the turn")


def test_live_messages_processed_one_by_one_never_repeat_text(streaming_turn):
    # All chunks are committed before the consumer handles the turn_started message (a busy consumer).
    session, turn, started, chunks = streaming_turn
    turn_text: dict[int, str] = {}
    for event in [started, *chunks]:
        fragments, _, _ = render_fragments(session.pk, [ev.serialize(event)], turn_text)
    assert turn_text[turn.pk] == "Alpha beta gamma"
    assert "Alpha beta gamma" in body_html(fragments, turn)


def test_a_catch_up_batch_with_the_card_and_its_chunks_shows_the_text_once(streaming_turn):
    session, turn, started, chunks = streaming_turn
    turn_text: dict[int, str] = {}
    batch = [ev.serialize(e) for e in [started, *chunks]]
    fragments, last_seq, _ = render_fragments(session.pk, batch, turn_text)
    assert last_seq == chunks[-1].seq
    html = body_html(fragments, turn)
    assert html.count("Alpha") == 1 and "gamma" in html
    # A later live chunk appends exactly once.
    more = ev.append_event(session_id=session.pk, kind="chunk", payload={"text": " delta"}, turn_id=turn.pk)
    render_fragments(session.pk, [ev.serialize(more)], turn_text)
    assert turn_text[turn.pk] == "Alpha beta gamma delta"


def test_a_finished_turn_redraws_the_score_chart_without_reading_every_turns_text(owner):
    """Every turn's end redraws the score chart for each viewer: it shows every agent's scores by round, and reads
    the turns' scores, not their replies (which grow with the session)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    session = two_agent_session(owner)
    writer, editor = session.agents.order_by("order")
    long_reply = "Street trees cool the city. " * 500
    scores = {(1, writer): 6.0, (1, editor): 7.5, (2, writer): 8.0, (2, editor): 8.5}
    turns = [
        Turn.objects.create(
            session=session, round=r, agent=agent, agent_name=agent.name, status="completed",
            overall_score=score, output_text=long_reply,
        )
        for (r, agent), score in scores.items()
    ]  # fmt: skip
    finished = ev.append_event(session_id=session.pk, kind="turn_finished", payload={}, turn_id=turns[-1].pk)

    with CaptureQueriesContext(connection) as queries:
        fragments, _, _ = render_fragments(session.pk, [ev.serialize(finished)], {})

    chart = next(f["html"] for f in fragments if f["target"] == "score-chart")
    for (r, agent), score in scores.items():
        assert f"{agent.name} · round {r}: {score:.1f}" in chart
    session_turns = [
        q["sql"] for q in queries.captured_queries
        if 'FROM "orchestration_turn" WHERE "orchestration_turn"."session_id" = ' in q["sql"]
        and " AND " not in q["sql"].split(" WHERE ", 1)[1]
    ]  # fmt: skip
    assert session_turns, "the chart reads the session's turns"
    assert not any('"output_text"' in sql for sql in session_turns), session_turns
