"""Termination conditions through the real engine, SDKs and fake provider."""

from __future__ import annotations

import pytest

from orchestration.models import DocumentVersion, Status, StopReason, Turn
from tests.orchestration.engine_helpers import scored_reply, two_agent_session
from tests.orchestration.test_engine import run_to_end, start

pytestmark = pytest.mark.django_db(transaction=True)

DRAFT = "# Trees\n\n" + " ".join(f"word{i}" for i in range(200))
EDITED = DRAFT + "\n\nA closing paragraph about shade, cooler streets and calmer people."


def test_a_round_that_changes_nothing_is_zero_percent_change_and_converges(providers, enqueued, rich_owner):
    """Case 16: from round 2 every turn returns the document unchanged: stop as converged, not at round 5."""
    providers.reply(scored_reply(DRAFT, 6, 6), *[scored_reply(EDITED, 7, 7)] * 9)
    session = two_agent_session(rich_owner, max_rounds=5, convergence_percent=5)
    start(session, rich_owner)
    assert run_to_end(session) == "finished"
    assert session.status == Status.COMPLETED
    assert session.stop_reason == StopReason.CONVERGED
    assert session.current_round == 2
    assert "unchanged" in session.stop_detail and "0%" in session.stop_detail
    assert Turn.objects.filter(session=session).count() == 4  # rounds 3-5 were not paid for
    assert not DocumentVersion.objects.filter(session=session, turn__round=2).exists()


def test_a_changing_round_carries_on_and_the_first_unchanged_one_stops_it(providers, enqueued, rich_owner):
    third = EDITED + "\n\n" + " ".join(f"more{i}" for i in range(120))
    providers.reply(
        scored_reply(DRAFT, 5, 5),  # round 1
        scored_reply(DRAFT, 5, 5),
        scored_reply(third, 6, 6),  # round 2: a large change
        scored_reply(third, 6, 6),
        scored_reply(third, 7, 7),  # round 3: nothing changes
        scored_reply(third, 7, 7),
        *[scored_reply(third + " x", 7, 7)] * 4,
    )
    session = two_agent_session(rich_owner, max_rounds=5, convergence_percent=5)
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.CONVERGED
    assert session.current_round == 3
    assert Turn.objects.filter(session=session, round=3, status=Turn.TurnStatus.COMPLETED).count() == 2
