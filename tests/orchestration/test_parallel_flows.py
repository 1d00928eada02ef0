"""The parallel flows end to end through the real SDKs and the fake LLM server."""

from __future__ import annotations

import itertools

import pytest

from billing.models import CreditEntry
from orchestration import engine
from orchestration.models import DocumentVersion, SessionEvent, Status, StopReason, Turn
from tests.orchestration.engine_helpers import priced_model
from tests.orchestration.flow_helpers import editorial_session, flow_replies, roundtable_session
from tests.orchestration.test_engine import run_to_end, start

# The engine tests' fixtures and helpers, shared.

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_editors_stream_concurrently_one_fails_for_good_and_the_round_completes(
    providers, enqueued, rich_owner, fast_retries, settings
):
    # The Style editor's provider refuses connections: retries, then no fallback, then given up.
    dead = priced_model("xai", "grok-test")
    settings.PROVIDERS = {**providers.provider_settings(), "xai": {"api_key": "k", "base_url": "http://127.0.0.1:9/v1"}}
    providers.default_reply = flow_replies()
    providers.tokens_per_second = 150
    providers.chunk_size = 6
    session = editorial_session(rich_owner, max_rounds=1)
    style = session.agents.get(name="Style")
    style.model = dead
    style.save()
    # A fourth, healthy editor so three stream at once while the fourth fails.
    from orchestration.models import Agent, Criterion

    extra = Agent.objects.create(
        session=session, order=3, name="Voice", role="editor", model=session.agents.get(name="Line").model,
        role_prompt="You are the voice editor.", max_output_tokens=1024,
    )  # fmt: skip
    Criterion.objects.create(agent=extra, name="Clarity", weight=1)
    start(session, rich_owner)
    run_to_end(session)

    assert session.status == Status.COMPLETED, session.stop_detail
    reviews = Turn.objects.filter(session=session, slot__startswith="review:", status=Turn.TurnStatus.COMPLETED)
    assert sorted(reviews.values_list("agent_name", flat=True)) == ["Line", "Structure", "Voice"]
    assert all(t.result["issues"] and t.result["tier"] == "json" for t in reviews)
    given_up = Turn.objects.get(session=session, agent_name="Style", result__given_up=True)
    assert given_up.status == Turn.TurnStatus.FAILED and given_up.error
    assert SessionEvent.objects.filter(session=session, kind="call_given_up", turn=given_up).exists()

    # The three healthy editors streamed at the same time: their chunk events interleave in the log.
    ids = set(reviews.values_list("pk", flat=True))
    order = list(
        SessionEvent.objects.filter(session=session, kind="chunk", turn_id__in=ids)
        .order_by("seq")
        .values_list("turn_id", flat=True)
    )
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    assert switches >= 4, order  # grouped one after the other would switch only twice
    starts = {
        e.turn_id: e.seq for e in SessionEvent.objects.filter(session=session, kind="turn_started", turn_id__in=ids)
    }
    first_finish = (
        SessionEvent.objects.filter(session=session, kind="turn_finished", turn_id__in=ids).order_by("seq").first()
    )
    assert max(starts.values()) < first_finish.seq  # all three had started before any finished

    # The synthesizer read the three reviews (and not the missing one), and its version is the document.
    synth = Turn.objects.get(session=session, slot="synthesize")
    assert synth.result["inputs"] == [t.pk for t in sorted(reviews, key=lambda t: t.agent.order)]
    assert synth.result["decisions"] and synth.result["tier"] == "json"
    prompt = next(r for r in providers.generation_requests() if "synthesizer of an editorial team" in r.system_text)
    assert "[E1]" in prompt.user_text and 'from="Voice"' in prompt.user_text and 'from="Style"' not in prompt.user_text
    assert DocumentVersion.objects.filter(session=session, turn=synth).exists()
    # Reviews never replace the document.
    assert not DocumentVersion.objects.filter(session=session, turn__slot__startswith="review:").exists()


def test_editorial_fails_clearly_when_no_editor_succeeds(providers, enqueued, rich_owner, fast_retries, settings):
    dead = priced_model("xai", "grok-test")
    settings.PROVIDERS = {**providers.provider_settings(), "xai": {"api_key": "k", "base_url": "http://127.0.0.1:9/v1"}}
    providers.default_reply = flow_replies()
    session = editorial_session(rich_owner, max_rounds=1)
    session.agents.filter(role="editor").update(model=dead)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.FAILED
    assert "gave up" in session.stop_detail and "retries" in session.stop_detail  # what happened, per model
    assert not Turn.objects.filter(session=session, slot="synthesize").exists()


def test_rerunning_a_parallel_step_never_repeats_or_double_charges_a_finished_call(providers, enqueued, rich_owner):
    import asyncio

    from orchestration.flows import get_policy

    providers.default_reply = flow_replies()
    session = roundtable_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    session.status = Status.RUNNING
    session.save(update_fields=["status"])
    assert engine.claim_lease(session.pk, "test-owner")  # run_step cancels its calls if the lease is not ours
    step = get_policy(session.flow).next_step(session)
    assert step.phase == "reviewing"
    first = asyncio.run(engine.run_step(session, step, "test-owner"))
    entries = CreditEntry.objects.count()
    requests = len(providers.generation_requests())
    # The same step again, as after a crash before the next step was planned.
    again = asyncio.run(engine.run_step(session, step, "test-owner"))
    assert sorted(again.completed_turn_ids) == sorted(first.completed_turn_ids)
    assert CreditEntry.objects.count() == entries
    assert len(providers.generation_requests()) == requests
    assert Turn.objects.filter(session=session).count() == 3


def test_roundtable_stops_when_no_high_severity_issues_are_left(providers, enqueued, rich_owner):
    providers.default_reply = flow_replies(high_issues_by_round=lambda r: 1 if r == 1 else 0)
    session = roundtable_session(rich_owner, max_rounds=5)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    assert session.stop_reason == StopReason.NO_HIGH_ISSUES and "round 2" in session.stop_detail
    assert Turn.objects.filter(session=session, slot="moderate").count() == 2
    moderate = Turn.objects.filter(session=session, slot="moderate").first()
    assert [r["id"] for r in moderate.result["resolutions"]] == ["I1", "I2", "I3", "I4", "I5", "I6"]


def test_roundtable_stops_when_the_document_changes_less_than_the_threshold(providers, enqueued, rich_owner):
    def document(r, recipe):
        body = "\n\n".join(f"Paragraph {i} about shade and rain in the city." for i in range(1, 30))
        return f"# Trees\n\n{body}\n\nClosing line {min(r, 2)}."

    providers.default_reply = flow_replies(high_issues_by_round=lambda r: 2, document_by_round=document)
    session = roundtable_session(rich_owner, max_rounds=5)
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.CONVERGED
    assert "less than 5 %" in session.stop_detail


def test_roundtable_stops_at_max_iterations_naming_the_rule(providers, enqueued, rich_owner):
    providers.default_reply = flow_replies(high_issues_by_round=lambda r: 1)
    session = roundtable_session(rich_owner, max_rounds=2, flow_config={"stop_below_change_percent": None})
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.MAX_ROUNDS and "Max iterations" in session.stop_detail
    assert Turn.objects.filter(session=session, slot__startswith="review:").count() == 6


@pytest.mark.parametrize("slug", ["writer-two-editors-synthesizer", "product-roundtable", "writing-roundtable"])
def test_the_new_presets_run_offline_on_the_demo_provider(slug, enqueued, rich_owner, settings):
    """A user without keys runs the parallel presets and sees issues with severities, decisions, resolutions."""
    from orchestration import presets
    from orchestration.catalogue import seed_catalogue
    from orchestration.models import Project, TeamPreset, WritingSession

    settings.DEMO_TOKENS_PER_SECOND = 0
    seed_catalogue()
    presets.seed_presets()
    preset = TeamPreset.objects.get(owner=None, slug=slug)
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=rich_owner, name="Demo"), title="Demo", brief=presets.DEMO_BRIEF
    )
    presets.apply_preset(session=session, preset=preset)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED, session.stop_detail
    reviews = Turn.objects.filter(session=session, slot__startswith="review:", status=Turn.TurnStatus.COMPLETED)
    assert reviews.exists()
    assert all(t.result["issues"] and t.result["tier"] in ("json", "text") for t in reviews)
    assert {i["severity"] for t in reviews.filter(round=1) for i in t.result["issues"]} == {"high", "medium", "low"}
    merger = Turn.objects.filter(session=session, slot__in=["synthesize", "moderate"]).first()
    items = merger.result.get("decisions") or merger.result.get("resolutions")
    assert items and all(i["verdict"] for i in items)
    assert session.final_document.startswith("# ")
    if preset.flow == "roundtable":
        assert session.stop_reason == StopReason.NO_HIGH_ISSUES


def test_stop_cancels_every_parallel_call_in_flight_and_keeps_what_each_wrote(providers, enqueued, rich_owner):
    import threading
    import time

    from orchestration import services
    from tests.live import wait_for

    providers.default_reply = lambda request: "A long review. " * 400  # ~6000 characters
    providers.tokens_per_second = 40  # each stream would take more than a minute
    session = roundtable_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    outcome: list[str] = []
    driver = threading.Thread(target=lambda: outcome.append(engine.drive(session.pk)))
    driver.start()

    def three_streams_have_text() -> bool:
        streaming = Turn.objects.filter(session=session, status=Turn.TurnStatus.STREAMING)
        return streaming.count() == 3 and all(
            SessionEvent.objects.filter(turn=t, kind="chunk").exists() for t in streaming
        )

    wait_for(three_streams_have_text, timeout=30, message="three critics streaming")
    services.stop_session(session=session)
    stopped_at = time.monotonic()
    driver.join(timeout=30)
    elapsed = time.monotonic() - stopped_at
    assert outcome == ["stopped"]
    assert elapsed < 3, f"Stop took {elapsed:.1f} s to cancel the calls in flight"  # the issue: about a second
    session.refresh_from_db()
    assert session.status == Status.STOPPED
    reviews = Turn.objects.filter(session=session, slot__startswith="review:")
    assert reviews.count() == 3
    assert all(t.status == Turn.TurnStatus.CANCELLED and t.output_text.startswith("A long review.") for t in reviews)
    assert not Turn.objects.filter(session=session, slot="moderate").exists()


def test_roundtable_critics_after_round_one_see_the_moderators_resolutions(providers, enqueued, rich_owner):
    from tests.orchestration.flow_helpers import recipe_of

    providers.default_reply = flow_replies(high_issues_by_round=lambda r: 1)
    session = roundtable_session(rich_owner, max_rounds=2, flow_config={"stop_below_change_percent": None})
    start(session, rich_owner)
    run_to_end(session)
    critiques = [r for r in providers.generation_requests() if recipe_of(r) == "critique"]
    first = [r for r in critiques if "This is round 1 of" in r.user_text]
    later = [r for r in critiques if "This is round 2 of" in r.user_text]
    assert len(first) == 3 and len(later) == 3
    heading = "The moderator's resolutions of the previous round"
    assert not any(heading in r.user_text for r in first)
    for request in later:
        text = request.user_text
        assert heading in text and "Round 1: how the moderator resolved the critics' issues" in text
        # Most severe first, each with its critic, the problem and the moderator's verdict and note.
        assert "- I1 [high] from Product: High 0 -> fixed (Done.)" in text
        assert "- I5 [high] from Risk: High 0 -> fixed (Done.)" in text
        assert text.index("I5 [high]") < text.index("I2 [low]")
    assert session.stop_reason == StopReason.MAX_ROUNDS
