"""SIGKILL of the worker in the middle of the pipeline's build stage: the run resumes by itself, and
research and plan (finished before the crash) are neither repeated nor paid for twice."""

from __future__ import annotations

from collections import Counter

import pytest

from billing.services import get_balance
from orchestration import services
from orchestration.models import SessionEvent, Status, Turn, WritingSession
from tests.live import assert_each_charge_once, preset_session, start_worker, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

NOTES = """# Shade

Street trees cool the pavement by several degrees in summer, which cities need.

## Storm water

Roots and crowns slow storm water, so drains in cities overflow less often.
"""


# Slow enough (25 tokens a second) that the test SIGKILLs the worker part-way through a turn; 5-second
# leases, so the worker started after it takes the session over soon after.
@pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="25", ENGINE_LEASE_SECONDS="5")
def test_worker_killed_mid_build_resumes_without_repeating_research_or_plan(live_app, owner):
    session = preset_session(
        owner,
        "researched-article",
        project="Trees",
        title="Why cities need trees",
        brief="An article on why cities need street trees for shade and storm water.",
        references=[("Notes", NOTES, "notes.md")],
    )
    balance_before = get_balance(owner)
    services.start_session(session=session, user=owner)

    def building() -> bool:
        build = Turn.objects.filter(session=session, slot="build", status=Turn.TurnStatus.STREAMING).first()
        return build is not None and SessionEvent.objects.filter(turn=build, kind="chunk").exists()

    wait_for(building, timeout=120, message="the build stage streaming")
    live_app.worker.kill_group()
    live_app.worker = start_worker(DEMO_TOKENS_PER_SECOND="400", ENGINE_LEASE_SECONDS="5")
    wait_for(
        lambda: WritingSession.objects.get(pk=session.pk).status == Status.COMPLETED, timeout=120, message="completion"
    )
    session.refresh_from_db()
    turns = list(Turn.objects.filter(session=session))
    completed = Counter((t.round, t.slot) for t in turns if t.status == Turn.TurnStatus.COMPLETED)
    assert set(completed.values()) == {1}, completed  # every stage saved once
    # Research and plan ran once, before the crash: one turn each, never attempted again.
    assert [t.attempt for t in turns if t.slot in ("research", "outline")] == [1, 1]
    interrupted = [t for t in turns if t.status == Turn.TurnStatus.INCOMPLETE]
    assert [(t.round, t.slot) for t in interrupted] == [(1, "build")]
    assert all(t.credits == 0 for t in interrupted)
    assert_each_charge_once(owner, session, balance_before=balance_before)
