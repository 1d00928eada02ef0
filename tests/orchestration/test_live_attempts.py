"""Interrupted attempts fold under the attempt that finally completed, each with its real cause.

Through the real engine, SDKs and fake provider; then the page and the pushed fragments as the user gets them.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration import events as ev
from orchestration.live import render_fragments
from orchestration.models import SessionEvent, Status, Turn
from tests.orchestration.engine_helpers import counting_replies, two_agent_session
from tests.orchestration.test_engine import run_to_end, start

pytestmark = pytest.mark.django_db(transaction=True)


def test_broken_attempts_fold_under_attempt_3_of_3_with_the_providers_cause(
    providers, enqueued, rich_owner, fast_retries, client
):
    providers.disconnect_next(after_chunks=3)
    providers.disconnect_next(after_chunks=2)
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    attempts = list(Turn.objects.filter(session=session, agent__name="Writer").order_by("attempt"))
    assert [(t.attempt, t.status) for t in attempts] == [
        (1, Turn.TurnStatus.INCOMPLETE),
        (2, Turn.TurnStatus.INCOMPLETE),
        (3, Turn.TurnStatus.COMPLETED),
    ]

    client.force_login(rich_owner)
    page = client.get(reverse("session_detail", args=[session.pk])).content.decode()
    # One card per call: the writer's final attempt, with the two broken ones folded inside it.
    assert page.count('data-testid="turn"') == 2
    assert f'id="turn-{attempts[2].pk}"' in page
    assert f'id="turn-{attempts[0].pk}"' not in page and f'id="turn-{attempts[1].pk}"' not in page
    assert "attempt 3 of 3" in page
    assert "2 earlier attempts" in page
    cause = attempts[0].error
    assert cause and "worker" not in cause.lower()  # the provider's failure, not a crash
    assert f"Attempt 1 of 3 · interrupted: {cause}" in page
    assert f"Attempt 2 of 3 · interrupted: {attempts[1].error}" in page

    # Live: the card of attempt 3 replaces the cards the page drew for attempts 1 and 2 as they ran.
    events = [ev.serialize(e) for e in SessionEvent.objects.filter(session=session).order_by("seq")]
    started = [e for e in events if e["kind"] == "turn_started" and e["turn_id"] == attempts[2].pk]
    fragments, _, _ = render_fragments(session.pk, started, {})
    card = next(f for f in fragments if f["target"] == f"turn-{attempts[2].pk}")
    assert card["replaces"] == [f"turn-{attempts[0].pk}", f"turn-{attempts[1].pk}"]
    assert "attempt 3 of 3" in card["html"] and "2 earlier attempts" in card["html"]
    # An attempt that already has a later one is never drawn as a card of its own again.
    finished_1 = [e for e in events if e["kind"] == "turn_finished" and e["turn_id"] == attempts[0].pk]
    fragments, _, _ = render_fragments(session.pk, finished_1, {})
    assert not any(f["target"] == f"turn-{attempts[0].pk}" for f in fragments)
