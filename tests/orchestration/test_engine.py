"""End to end through the real SDKs and the fake server: the engine runs sessions to each ending."""

from __future__ import annotations

import pytest

from billing.services import get_balance, grant_credits
from orchestration import engine, services
from orchestration.models import DocumentVersion, SessionEvent, Status, StopReason, Turn
from tests.orchestration.engine_helpers import counting_replies, on_pro_plan, scored_reply, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)


def run_to_end(session) -> str:
    outcome = engine.drive(session.pk)
    session.refresh_from_db()
    return outcome


def start(session, user):
    services.start_session(session=session, user=user)
    session.refresh_from_db()
    assert session.status == Status.QUEUED


def test_runs_to_max_rounds_with_turns_versions_usage_and_scores(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies(start=5, step=0.5)] * 4)
    session = two_agent_session(rich_owner, max_rounds=2)
    balance_before = get_balance(rich_owner)
    start(session, rich_owner)
    assert enqueued == [session.pk]

    assert run_to_end(session) == "finished"
    assert session.status == Status.COMPLETED
    assert session.stop_reason == StopReason.MAX_ROUNDS
    turns = list(Turn.objects.filter(session=session).order_by("pk"))
    assert [(t.round, t.agent_name) for t in turns] == [(1, "Writer"), (1, "Editor"), (2, "Writer"), (2, "Editor")]
    assert all(t.status == Turn.TurnStatus.COMPLETED for t in turns)
    assert all(t.parse_tier == "json" and t.overall_score is not None for t in turns)
    assert turns[0].scores == {"Clarity": 5.0, "Evidence": 5.0}
    assert all(t.input_tokens > 0 and t.output_tokens > 0 and t.credits > 0 for t in turns)
    # The writer's stable prefix (~440 tokens) is under Anthropic's 1,024-token minimum: it is not marked
    # cacheable, and nothing is read from a cache (test_prompt_caching covers a prefix long enough).
    assert "cache_control" not in providers.generation_requests()[0].json["system"][0]
    assert turns[2].cached_tokens == 0
    assert DocumentVersion.objects.filter(session=session).count() == 4
    assert session.final_document.startswith("# Why cities need trees")
    assert "<evaluation>" not in session.final_document
    assert session.credits_used == sum(t.credits for t in turns)
    assert get_balance(rich_owner) == balance_before - session.credits_used
    # The real SDKs were used against both wire protocols.
    paths = [r.path for r in providers.generation_requests()]
    assert paths == ["/v1/messages", "/v1/chat/completions"] * 2
    # Events are numbered without gaps.
    seqs = list(SessionEvent.objects.filter(session=session).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_stops_when_the_score_threshold_is_reached(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies(start=6, step=1)] * 6)
    session = two_agent_session(rich_owner, max_rounds=5, score_threshold=8.0)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    assert session.stop_reason == StopReason.SCORE_THRESHOLD
    assert Turn.objects.filter(session=session).count() == 3  # 6, 7, 8 -> stop after the third turn
    assert "8.0" in session.stop_detail


def test_threshold_can_watch_one_agent(providers, enqueued, rich_owner):
    replies = [scored_reply("Draft A", 9, 9), scored_reply("Draft B", 5, 5), scored_reply("Draft C", 9, 9),
               scored_reply("Draft D", 9, 9)]  # fmt: skip
    providers.reply(*replies)
    session = two_agent_session(rich_owner, max_rounds=3, score_threshold=8.5)
    session.threshold_agent = session.agents.get(name="Editor")
    session.save()
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.SCORE_THRESHOLD
    assert Turn.objects.filter(session=session).count() == 4  # the writer's 9 did not count; the editor's did


def test_stops_when_the_document_converges(providers, enqueued, rich_owner):
    same = "# Trees\n\n" + " ".join(f"word{i}" for i in range(200))
    providers.reply(
        scored_reply("# Trees\n\nA first short draft.", 5, 5),
        scored_reply(same, 6, 6),
        scored_reply(same + " extra", 6, 6),
        scored_reply(same + " extra", 6, 6),
    )
    session = two_agent_session(rich_owner, max_rounds=6, convergence_percent=5)
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.CONVERGED
    assert session.current_round == 2


def test_stops_at_the_session_credit_budget(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies()] * 10)
    session = two_agent_session(rich_owner, max_rounds=10, credit_budget=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.BUDGET
    assert Turn.objects.filter(session=session).count() == 1


def test_user_pause_resume_and_stop(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies()] * 10)
    session = two_agent_session(rich_owner, max_rounds=3)
    start(session, rich_owner)
    services.pause_session(session=session)
    assert run_to_end(session) == "paused"
    assert session.status == Status.PAUSED
    assert Turn.objects.filter(session=session).count() == 0

    services.resume_session(session=session, user=rich_owner)
    session.refresh_from_db()
    assert session.status == Status.QUEUED
    # Nobody is executing it yet, so stopping is immediate.
    services.stop_session(session=session)
    session.refresh_from_db()
    assert session.status == Status.STOPPED
    assert session.stop_reason == StopReason.USER_STOPPED
    assert engine.drive(session.pk) == "busy"  # a late task finds nothing to do


def test_stop_cancels_the_call_in_flight_and_keeps_what_was_written(providers, enqueued, rich_owner):
    import threading
    import time

    providers.tokens_per_second = 20  # slow stream: plenty of time to stop it part-way
    providers.reply(scored_reply("word " * 400, 7, 7))
    session = two_agent_session(rich_owner, max_rounds=3)
    start(session, rich_owner)
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(engine.drive(session.pk)))
    runner.start()
    from tests.live import wait_for

    wait_for(lambda: SessionEvent.objects.filter(session=session, kind="chunk").count() >= 3, message="chunks")
    services.stop_session(session=session)
    stopped_at = time.monotonic()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert time.monotonic() - stopped_at < 3  # cancelled within about a second, not after the stream
    session.refresh_from_db()
    assert outcome == ["stopped"] and session.status == Status.STOPPED
    turn = Turn.objects.get(session=session)
    assert turn.status == Turn.TurnStatus.CANCELLED
    assert turn.output_text.startswith("word word")
    assert len(turn.output_text) < len("word " * 400)


def _press_after_first_turn_is_saved(monkeypatch, press):
    """Make `press(session)` happen just after the first turn's completion commits, before the next turn."""
    from orchestration import calls
    from orchestration.models import WritingSession

    real = calls.complete_turn
    pressed: list[int] = []

    def complete_then_press(**kwargs):
        status = real(**kwargs)
        if not pressed:
            pressed.append(kwargs["turn_id"])
            press(WritingSession.objects.get(pk=kwargs["session"].pk))
        return status

    monkeypatch.setattr(calls, "complete_turn", complete_then_press)
    return pressed


def test_a_stop_pressed_between_turns_begins_no_further_turn(providers, enqueued, rich_owner, monkeypatch):
    providers.reply(*[counting_replies()] * 6)
    session = two_agent_session(rich_owner, max_rounds=3)
    start(session, rich_owner)
    balance_before = get_balance(rich_owner)
    pressed = _press_after_first_turn_is_saved(monkeypatch, lambda s: services.stop_session(session=s))
    assert run_to_end(session) == "stopped"
    assert session.status == Status.STOPPED and session.stop_reason == StopReason.USER_STOPPED
    # Only the turn saved before the Stop exists: none was begun, reserved or charged after it.
    turn = Turn.objects.get(session=session)
    assert turn.pk == pressed[0] and turn.status == Turn.TurnStatus.COMPLETED
    assert get_balance(rich_owner) == balance_before - turn.credits
    assert session.credits_used == turn.credits


def test_a_pause_pressed_between_turns_pauses_before_the_next_and_resumes_with_it(
    providers, enqueued, rich_owner, monkeypatch
):
    providers.reply(*[counting_replies()] * 6)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    _press_after_first_turn_is_saved(monkeypatch, lambda s: services.pause_session(session=s))
    assert run_to_end(session) == "paused"
    assert session.status == Status.PAUSED
    assert list(Turn.objects.filter(session=session).values_list("agent_name", flat=True)) == ["Writer"]
    services.resume_session(session=session, user=rich_owner)
    assert run_to_end(session) == "finished"
    assert list(Turn.objects.filter(session=session).order_by("pk").values_list("agent_name", flat=True)) == [
        "Writer",
        "Editor",
    ]


def test_continue_a_finished_session_for_more_rounds(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies(start=9, step=0)] * 10)
    session = two_agent_session(rich_owner, max_rounds=1, score_threshold=8)
    start(session, rich_owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.SCORE_THRESHOLD
    services.continue_session(session=session, extra_rounds=1, user=rich_owner)
    session.refresh_from_db()
    assert session.max_rounds == 2
    run_to_end(session)
    # The threshold was met before the continue; only new rounds count, so round 2 runs.
    assert Turn.objects.filter(session=session, round=2).exists()


def test_out_of_credits_pauses_with_a_clear_reason(providers, enqueued, owner):
    from billing.services import get_account

    providers.reply(*[counting_replies()] * 4)
    on_pro_plan(owner)
    session = two_agent_session(owner, max_rounds=2)
    account = get_account(owner)
    # Spend the whole balance so the first reservation fails.
    from billing.services import adjust_credits

    adjust_credits(user=owner, amount=-account.balance, reason="test", staff_user=None)
    start(session, owner)
    assert run_to_end(session) == "paused"
    assert session.status == Status.PAUSED
    assert session.stop_reason == StopReason.OUT_OF_CREDITS
    assert not Turn.objects.filter(session=session).exists()


def test_step_run_twice_never_saves_or_charges_twice(providers, enqueued, rich_owner):
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    credits = session.credits_used
    turns = Turn.objects.filter(session=session).count()
    # Another executor picks the same session up again (a duplicate task): nothing happens.
    assert engine.drive(session.pk) in ("busy", "idle")
    session.refresh_from_db()
    assert session.credits_used == credits
    assert Turn.objects.filter(session=session).count() == turns


# --- Provider faults end in a completed turn or a clearly marked failure, never a stuck session ---


def test_rate_limit_then_success_completes_the_turn(providers, enqueued, rich_owner, fast_retries):
    providers.fail_next(429, retry_after=0)
    providers.reply(*[counting_replies()] * 2)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    turns = Turn.objects.filter(session=session).order_by("pk")
    assert [t.status for t in turns] == ["failed", "completed", "completed"]
    assert "rate" in turns[0].error.lower()
    assert turns[0].credits == 0  # nothing was generated, nothing charged


def test_broken_stream_marks_the_turn_incomplete_and_retries_it(providers, enqueued, rich_owner, fast_retries):
    providers.disconnect_next(after_chunks=3)
    providers.reply(*[counting_replies()] * 3)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    first, second = Turn.objects.filter(session=session, agent__name="Writer").order_by("attempt")
    assert first.status == Turn.TurnStatus.INCOMPLETE and first.output_text
    assert second.status == Turn.TurnStatus.COMPLETED and second.attempt == 2


def test_bad_key_fails_the_session_telling_the_user_it_is_the_operators_to_fix_and_is_not_retried(
    providers, enqueued, rich_owner, settings
):
    settings.PROVIDERS = providers.provider_settings(api_key="wrong-key-123")
    providers.fail_next(401)
    session = two_agent_session(rich_owner, max_rounds=2)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.FAILED
    assert session.stop_reason == StopReason.ERROR
    assert "rejected (401)" in session.stop_detail and "operator" in session.stop_detail
    assert "ANTHROPIC_API_KEY" not in session.stop_detail
    assert "wrong-key-123" not in session.stop_detail
    assert len(providers.generation_requests()) == 1


def test_persistent_server_errors_fall_back_to_the_fallback_model(providers, enqueued, rich_owner, fast_retries):
    from tests.orchestration.engine_helpers import priced_model

    for _ in range(3):
        providers.fail_next(529)
    providers.reply(*[counting_replies()] * 2)
    session = two_agent_session(rich_owner, max_rounds=1)
    writer = session.agents.get(name="Writer")
    writer.fallback_model = priced_model("anthropic", "claude-backup")
    writer.save()
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    completed = Turn.objects.get(session=session, agent=writer, status=Turn.TurnStatus.COMPLETED)
    assert completed.model_used == "claude-backup"


def test_persistent_errors_without_fallback_fail_clearly(providers, enqueued, rich_owner, fast_retries):
    for _ in range(3):
        providers.fail_next(500)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.FAILED
    assert "Writer" in session.stop_detail and "retries" in session.stop_detail


def test_a_stalled_stream_times_out_and_is_retried(providers, enqueued, rich_owner, fast_retries, settings):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDER_TIMEOUT_SECONDS = 1
    clear_adapter_cache()
    providers.stall_next(after_chunks=2)
    providers.reply(*[counting_replies()] * 3)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    statuses = list(Turn.objects.filter(session=session, agent__name="Writer").values_list("status", flat=True))
    assert statuses == [Turn.TurnStatus.INCOMPLETE, Turn.TurnStatus.COMPLETED]


# --- Invalid configurations are refused before anything runs ---


def test_invalid_configurations_are_refused_with_clear_messages(providers, enqueued, rich_owner, settings):
    session = two_agent_session(rich_owner, max_rounds=3)
    session.brief = "   "
    session.max_rounds = 99
    session.document = "x" * (services.MAX_DOCUMENT_CHARS + 1)
    session.save()
    writer = session.agents.get(name="Writer")
    writer.model.input_price_per_mtok = None
    writer.model.save()
    settings.PROVIDERS = {**settings.PROVIDERS, "compatible": {"api_key": "", "base_url": ""}}
    problems = " ".join(services.validate_for_start(session))
    assert "brief" in problems
    assert "between 1 and 50" in problems
    assert "too long" in problems
    assert "no price" in problems
    # Users are told the provider is not connected, never which setting is missing (issue 14, item 10).
    assert "OpenAI-compatible server is not connected on this server" in problems
    assert "COMPATIBLE_BASE_URL" not in problems
    with pytest.raises(services.ServiceError):
        services.start_session(session=session, user=rich_owner)
    session.refresh_from_db()
    assert session.status == Status.DRAFT
    assert enqueued == []
    assert providers.generation_requests() == []


def test_a_session_without_agents_is_refused(enqueued, rich_owner):
    session = two_agent_session(rich_owner)
    session.agents.all().delete()
    assert "Add at least one active agent." in services.validate_for_start(session)


def test_a_session_out_of_credits_resumes_by_itself_once_credits_arrive(providers, enqueued, owner):
    from billing.services import adjust_credits, get_account
    from orchestration.tasks import resume_funded_sessions

    on_pro_plan(owner)
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(owner, max_rounds=1)
    adjust_credits(user=owner, amount=-get_account(owner).balance, reason="test", staff_user=None)
    start(session, owner)
    run_to_end(session)
    assert session.stop_reason == StopReason.OUT_OF_CREDITS
    assert resume_funded_sessions() == 0  # still nothing to spend

    grant_credits(user=owner, amount=100_000, key="test:purchase", description="bought credits")
    assert resume_funded_sessions() == 1
    session.refresh_from_db()
    assert session.status == Status.QUEUED
    run_to_end(session)
    assert session.status == Status.COMPLETED


@pytest.mark.parametrize("wants_email", [True, False])
def test_the_owner_is_emailed_when_a_run_finishes_if_they_asked(
    providers, enqueued, rich_owner, mailoutbox, run_finished_emails, wants_email
):
    """The email goes out from the worker's mail thread once the run's end committed: the engine's database
    thread, shared by every session of its worker, never waits for a mail server."""
    from accounts.services import get_profile

    profile = get_profile(rich_owner)
    profile.email_on_run_finished = wants_email
    profile.save()
    providers.reply(*[counting_replies()] * 2)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    run_to_end(session)
    assert session.status == Status.COMPLETED
    assert run_finished_emails == [session.pk]
    assert mailoutbox == []  # nothing sent by the run itself

    assert run_finished_emails.send_later(session.pk).result(timeout=30) is wants_email
    sent = [m for m in mailoutbox if session.title in m.subject]
    assert len(sent) == (1 if wants_email else 0)
    if wants_email:
        assert sent[0].to == [rich_owner.email]
        assert "Reached the maximum number of rounds" in sent[0].body
        assert f"/sessions/{session.pk}/" in sent[0].body


def test_a_slow_push_holds_up_no_turn_and_every_event_still_goes_out_once_in_order(
    providers, enqueued, rich_owner, monkeypatch
):
    """Issue 15 (queue pickup): the drive's first step pushes its "running" status behind it, so with the
    channel layer slow (0.3 s a push) the first turn starts before that push has gone out; the page still gets
    every committed event, once, in the order of the log."""
    import asyncio
    import time

    from django.utils import timezone

    from orchestration import events

    pushed: list[tuple[float, list[int]]] = []

    async def slow_push(session_id, message):
        await asyncio.sleep(0.3)
        pushed.append((time.time(), [event["seq"] for event in message.get("events", [])]))

    monkeypatch.setattr(events, "push_message", slow_push)
    providers.reply(*[counting_replies()] * 2)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)
    started = timezone.now().timestamp()

    assert run_to_end(session) == "finished"
    first_turn = Turn.objects.filter(session=session).order_by("pk").first()
    statuses = SessionEvent.objects.filter(session=session, kind="status", payload__status=Status.RUNNING)
    running = statuses.order_by("seq").first().seq  # the move to running, the drive's first push
    running_push_done = next(at for at, seqs in pushed if running in seqs)
    assert first_turn.started_at.timestamp() < running_push_done
    assert first_turn.started_at.timestamp() - started < 0.3  # it did not wait for the push
    logged = list(SessionEvent.objects.filter(session=session).values_list("seq", flat=True))
    sent = [seq for _, seqs in pushed for seq in seqs]
    assert sent == sorted(sent) and set(logged) <= set(sent)  # chunk events compacted later are pushed too
