"""Issue 8, provider replies: odd endings, odd streams and odd errors, each through the real SDKs against the
wire-level fake server, the adapters, the engine and the database, asserting what the user sees and is charged.

The session of `two_agent_session`: an Anthropic writer ("claude-test") then an OpenAI-compatible editor
("local-llama"); the fake server answers their requests in that order.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.models import CreditEntry, EntryKind
from billing.services import find_drift, get_balance
from orchestration import engine
from orchestration.models import DocumentVersion, Status, Turn
from tests.fakes.llm_server import count_tokens
from tests.orchestration.engine_helpers import priced_model, scored_reply, two_agent_session
from tests.orchestration.test_engine import start

pytestmark = pytest.mark.django_db(transaction=True)

WRITER_DOC = "# Why cities need trees\n\nTrees cool streets by several degrees and clean the air we breathe."
EDITOR_DOC = WRITER_DOC + "\n\nThey also calm traffic and raise property values, as three city studies show."


def run(session):
    outcome = engine.drive(session.pk)
    session.refresh_from_db()
    return outcome


def turn_of(session, agent_name: str, **filters) -> Turn:
    return Turn.objects.filter(session=session, agent_name=agent_name, **filters).order_by("-pk").first()


def assert_every_reservation_closed(user) -> None:
    """No credits stay held: every reservation has exactly one settlement or release, and no drift."""
    reservations = CreditEntry.objects.filter(user=user, kind=EntryKind.RESERVATION)
    for reservation in reservations:
        closes = CreditEntry.objects.filter(reservation_key=reservation.idempotency_key)
        assert closes.count() == 1, f"reservation {reservation.idempotency_key} is still open"
    assert find_drift() == []


def card_html(client, session) -> str:
    response = client.get(reverse("session_detail", args=[session.pk]))
    assert response.status_code == 200
    return response.content.decode()


# --- 1. Replies cut off by the output limit ------------------------------------------------------------------


def test_a_reply_cut_at_anthropics_max_tokens_is_marked_and_never_replaces_the_document(
    providers, enqueued, rich_owner, client
):
    session = two_agent_session(rich_owner, max_rounds=1)
    writer = session.agents.get(name="Writer")
    writer.max_output_tokens = 64  # 64 chunks of 4 characters: the reply below is cut mid-word
    writer.save()
    long_reply = scored_reply(WRITER_DOC + " More about shade and canopies." * 20, 9, 9)
    providers.reply(long_reply, scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    assert run(session) == "finished"

    cut = turn_of(session, "Writer")
    assert cut.status == Turn.TurnStatus.TRUNCATED
    assert cut.stop_reason == "max_tokens"
    assert cut.output_text == long_reply[: 64 * 4]  # what the provider sent is kept on the turn...
    assert cut.scores == {} and cut.overall_score is None and cut.feedback == ""
    assert "cut off" in cut.error and "64 tokens" in cut.error and "max output tokens" in cut.error
    assert not DocumentVersion.objects.filter(turn=cut).exists()  # ...but is never a version
    # Charged what the provider reported: 64 output tokens, the whole prompt as input.
    assert cut.output_tokens == 64 and not cut.usage_estimated and cut.credits > 0
    # The session carried on: the editor wrote the document from the brief.
    editor = turn_of(session, "Editor")
    assert editor.status == Turn.TurnStatus.COMPLETED
    assert session.status == Status.COMPLETED
    assert session.final_document.strip() == EDITOR_DOC
    assert session.credits_used == cut.credits + editor.credits
    assert_every_reservation_closed(rich_owner)
    client.force_login(rich_owner)
    page = card_html(client, session)
    assert "Cut off" in page and "stop reason “max_tokens”" in page


def test_a_reply_cut_at_openais_length_keeps_the_previous_document(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(scored_reply(WRITER_DOC, 7, 7))
    providers.reply(EDITOR_DOC[:40], stop_reason="length")
    start(session, rich_owner)

    run(session)

    editor = turn_of(session, "Editor")
    assert (editor.status, editor.stop_reason) == (Turn.TurnStatus.TRUNCATED, "length")
    assert session.final_document.strip() == WRITER_DOC  # the writer's version stands
    assert DocumentVersion.objects.filter(session=session).count() == 1


@pytest.mark.parametrize("stop_reason", ["pause_turn", "tool_use", "model_context_window_exceeded", "new_reason"])
def test_any_other_anthropic_stop_reason_never_replaces_the_document(providers, enqueued, rich_owner, stop_reason):
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(scored_reply(WRITER_DOC, 7, 7), stop_reason=stop_reason)
    providers.reply(scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    writer = turn_of(session, "Writer")
    assert writer.status == Turn.TurnStatus.TRUNCATED and writer.stop_reason == stop_reason
    assert stop_reason in writer.error
    assert not DocumentVersion.objects.filter(turn=writer).exists()
    assert session.status == Status.COMPLETED


# --- 2. Refusals and content filters ---------------------------------------------------------------------------


def test_an_openai_refusal_is_shown_in_the_providers_words_and_keeps_the_document(
    providers, enqueued, rich_owner, client
):
    words = "I'm sorry, but I can't help with rewriting this document."
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(scored_reply(WRITER_DOC, 7, 7))
    providers.reply("", refusal=words)
    start(session, rich_owner)

    run(session)

    editor = turn_of(session, "Editor")
    assert (editor.status, editor.stop_reason) == (Turn.TurnStatus.REFUSED, "refusal")
    assert words in editor.error and "refused" in editor.error
    assert editor.output_tokens > 0 and editor.credits > 0  # the provider bills a refusal's tokens
    assert session.final_document.strip() == WRITER_DOC
    client.force_login(rich_owner)
    page = card_html(client, session)
    assert "Refused" in page and "I&#x27;m sorry, but I can&#x27;t help" in page


def test_an_anthropic_refusal_after_some_text_is_not_a_version_nor_the_next_prompt(providers, enqueued, rich_owner):
    started_text = "# Why cities need trees\n\nI started revising this essay, but " + "x" * 120
    session = two_agent_session(rich_owner, max_rounds=2)
    providers.reply(scored_reply(WRITER_DOC, 6, 6), scored_reply(EDITOR_DOC, 7, 7))
    providers.reply(
        started_text,
        stop_reason="refusal",
        stop_details={"type": "refusal", "category": "general_harms", "explanation": "Policy stop."},
    )
    providers.reply(scored_reply(EDITOR_DOC + "\n\nFinal line.", 8, 8))
    start(session, rich_owner)

    run(session)

    refused = turn_of(session, "Writer", round=2)
    assert refused.status == Turn.TurnStatus.REFUSED
    assert "Policy stop. (category: general_harms)" in refused.error
    assert refused.output_text == started_text
    versions = list(DocumentVersion.objects.filter(session=session).values_list("content", flat=True))
    assert started_text not in versions and len(versions) == 3
    # The editor of round 2 was handed the editor's round-1 document, not the refusal.
    last_prompt = providers.generation_requests()[-1].user_text
    assert "They also calm traffic" in last_prompt and "I started revising" not in last_prompt
    assert session.status == Status.COMPLETED


def test_an_openai_content_filter_stop_keeps_the_document(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(scored_reply(WRITER_DOC, 7, 7))
    providers.reply("# Why cities need trees\n\nPartial", stop_reason="content_filter")
    start(session, rich_owner)

    run(session)

    editor = turn_of(session, "Editor")
    assert (editor.status, editor.stop_reason) == (Turn.TurnStatus.REFUSED, "content_filter")
    assert "content filter" in editor.error
    assert session.final_document.strip() == WRITER_DOC


# --- 3. <think> blocks of OpenAI-compatible reasoning models ----------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "<think>\nThe user wants trees. Plan: add a traffic paragraph.\n</think>\n\n" + scored_reply(EDITOR_DOC, 8, 8),
        # vLLM with a reasoning parser off sometimes drops the opening tag.
        "The user wants trees. Plan: add a traffic paragraph.\n</think>\n\n" + scored_reply(EDITOR_DOC, 8, 8),
    ],
    ids=["think-block", "missing-opening-tag"],
)
def test_think_blocks_are_the_turns_reasoning_not_the_document(providers, enqueued, rich_owner, reply):
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(scored_reply(WRITER_DOC, 7, 7), reply)
    start(session, rich_owner)

    run(session)

    editor = turn_of(session, "Editor")
    assert editor.status == Turn.TurnStatus.COMPLETED
    assert editor.reasoning == "The user wants trees. Plan: add a traffic paragraph."
    assert "think>" not in editor.output_text and "Plan:" not in editor.output_text
    assert editor.scores == {"Clarity": 8.0, "Evidence": 8.0}
    assert session.final_document.strip() == EDITOR_DOC
    assert "Plan:" not in editor.feedback


# --- 4. Impossible usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["Editor", "Writer"])  # an OpenAI-compatible server, an Anthropic gateway
def test_zero_usage_for_a_real_reply_is_estimated_charged_and_marked(providers, enqueued, rich_owner, client, agent):
    session = two_agent_session(rich_owner, max_rounds=1)
    reply = scored_reply(EDITOR_DOC + "\n\n" + "Shade matters. " * 22, 8, 8)
    assert len(reply) > 500
    if agent == "Editor":
        providers.reply(scored_reply(WRITER_DOC, 7, 7))
        providers.reply(reply, zero_usage=True)
    else:
        providers.reply(reply, zero_usage=True)
        providers.reply(scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    zeroed = turn_of(session, agent)
    assert zeroed.status == Turn.TurnStatus.COMPLETED
    assert zeroed.usage_estimated is True
    assert zeroed.output_tokens == -(-len(reply) // 4)  # ~4 characters a token, not 0
    assert zeroed.input_tokens > 0 and zeroed.credits > 0
    other = turn_of(session, "Writer" if agent == "Editor" else "Editor")
    assert other.usage_estimated is False
    client.force_login(rich_owner)
    page = card_html(client, session)
    assert page.count('data-testid="usage-estimated"') == 1


# --- 5. A surrogate pair split across two deltas ----------------------------------------------------------------


@pytest.mark.parametrize("agent", ["Writer", "Editor"])
def test_a_surrogate_pair_split_across_deltas_is_rejoined(providers, enqueued, rich_owner, agent):
    session = two_agent_session(rich_owner, max_rounds=1)
    document = "# Trees\n\nabc\U0001f333def and more shade."
    split_at = document.index("\U0001f333")
    # JSON escapes let a gateway send half of the emoji in each chunk: "abc\ud83c" then "\udf33def".
    high, low = "\ud83c", "\udf33"
    chunks = [document[:split_at] + high, low + document[split_at + 1 :], "\n\n" + scored_reply("", 8, 8).strip()]
    odd = {"chunks": chunks}
    if agent == "Writer":
        providers.reply(scored_reply(document, 8, 8), **odd)
        providers.reply(scored_reply(document + "\n\nEdited.", 8, 8))
    else:
        providers.reply(scored_reply(WRITER_DOC, 7, 7))
        providers.reply(scored_reply(document, 8, 8), **odd)
    start(session, rich_owner)

    run(session)

    turn = turn_of(session, agent)
    assert turn.status == Turn.TurnStatus.COMPLETED
    assert "abc\U0001f333def" in turn.output_text
    assert session.status == Status.COMPLETED
    assert_every_reservation_closed(rich_owner)


# --- 5b. Any unexpected exception while running a turn -----------------------------------------------------------


def _raise_on_call(n: int, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    return wrapper


PHASES = {
    # phase: (object to patch, attribute, which call raises)
    "building the prompt": ("orchestration.prompts", "build_prompt", 1),
    "reserving credits": ("billing.services", "reserve_credits", 1),
    "streaming": ("orchestration.providers.base.SurrogateJoiner", "feed", 3),
    "parsing the reply": ("orchestration.flows", "parse_result", 1),
    "pricing the usage": ("billing.pricing", "credits_for_usage", 2),
    "settling credits": ("billing.services", "settle_credits", 1),
    "recording the version": ("orchestration.turns", "record_version", 1),
    "abandoning a broken turn": ("orchestration.providers.base", "estimate_tokens", 1),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_an_exception_in_any_phase_of_a_turn_ends_it_terminal_with_its_credits_released(
    providers, enqueued, rich_owner, monkeypatch, phase
):
    import importlib

    target, attribute, nth = PHASES[phase]
    module_name, _, class_name = target.rpartition(".") if target.endswith("SurrogateJoiner") else (target, "", "")
    owner = getattr(importlib.import_module(module_name), class_name) if class_name else importlib.import_module(target)
    monkeypatch.setattr(owner, attribute, _raise_on_call(nth, getattr(owner, attribute)))
    if phase == "abandoning a broken turn":
        providers.disconnect_next(after_chunks=3)
    providers.reply(scored_reply(WRITER_DOC, 7, 7), scored_reply(EDITOR_DOC, 8, 8))
    session = two_agent_session(rich_owner, max_rounds=1)
    balance = get_balance(rich_owner)
    start(session, rich_owner)

    assert run(session) == "failed"

    assert session.status == Status.FAILED
    assert "internal error" in session.stop_detail
    statuses = set(Turn.objects.filter(session=session).values_list("status", flat=True))
    assert statuses <= set(Turn.TERMINAL_STATUSES), statuses
    assert_every_reservation_closed(rich_owner)
    assert get_balance(rich_owner) == balance - session.credits_used


# --- 6. A prompt too long for the provider --------------------------------------------------------------------------


def _with_reference(session, chars: int) -> None:
    from orchestration.models import ReferenceDocument as Reference

    Reference.objects.create(session=session, title="City survey", content="Canopy data row. " * (chars // 17))


def test_a_prompt_too_long_is_refitted_with_the_providers_numbers_and_retried_once(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    _with_reference(session, 40_000)
    providers.context_limits["claude-test"] = 6_000  # tokens; the catalogue believes 200,000
    providers.reply(scored_reply(WRITER_DOC, 7, 7), scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    assert session.status == Status.COMPLETED
    first, second = Turn.objects.filter(session=session, agent_name="Writer").order_by("attempt")
    assert first.status == Turn.TurnStatus.FAILED and "prompt is too long" in first.error
    assert first.credits == 0
    assert second.status == Turn.TurnStatus.COMPLETED
    assert "City survey" in second.prompt_notes and "truncated" in second.prompt_notes
    writer_requests = [r for r in providers.generation_requests() if r.json["model"] == "claude-test"]
    assert len(writer_requests) == 2
    resent = writer_requests[1]
    assert count_tokens(resent.system_text) + count_tokens(resent.user_text) <= 6_000


def test_a_prompt_that_cannot_fit_goes_to_the_fallback_model_then_fails_clearly(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    session.document = "A draft that is far too long for the small model. " * 1_000  # ~12,500 tokens
    session.save()
    providers.context_limits["claude-test"] = 6_000
    writer = session.agents.get(name="Writer")
    writer.fallback_model = priced_model("anthropic", "claude-big")
    writer.save()
    providers.reply(scored_reply(WRITER_DOC, 7, 7), scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    assert session.status == Status.COMPLETED
    done = turn_of(session, "Writer", status=Turn.TurnStatus.COMPLETED)
    assert done.model_used == "claude-big"
    models = [r.json["model"] for r in providers.generation_requests()]
    assert models[:2] == ["claude-test", "claude-big"]  # the refit could not cut the document: no second try


def test_a_prompt_too_long_for_every_model_fails_with_the_reason(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    session.document = "A draft that is far too long for the small model. " * 1_000
    session.save()
    session.agents.filter(name="Writer").update(active=False)
    providers.context_limits["local-llama"] = 6_000  # the OpenAI-compatible editor: OpenAI's error shape
    start(session, rich_owner)

    run(session)

    assert session.status == Status.FAILED
    assert "Editor gave up" in session.stop_detail
    assert "context" in session.stop_detail.lower() and "never cut" in session.stop_detail
    editor = turn_of(session, "Editor")
    assert "maximum context length is 6000 tokens" in editor.error
    assert_every_reservation_closed(rich_owner)


# --- 9. Rate limits --------------------------------------------------------------------------------------------------


@pytest.fixture
def recorded_waits(monkeypatch):
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("orchestration.calls.wait_before_retry", record)
    return waits


def test_a_rate_limit_forever_is_retried_for_a_minute_honouring_retry_after(
    providers, enqueued, rich_owner, recorded_waits, settings
):
    settings.PROVIDER_RATE_LIMIT_WINDOW_SECONDS = 60
    providers.fail_always(429, retry_after=20)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)

    run(session)

    assert recorded_waits == [20, 20, 20]  # Retry-After honoured until a minute of waiting is spent
    assert len(providers.generation_requests()) == 4
    assert session.status == Status.FAILED
    detail = session.stop_detail
    assert "Writer gave up" in detail and "4 attempts (3 retries over 60 s of waiting)" in detail
    assert "rate limit (429)" in detail and "will be retried" not in detail
    turns = list(Turn.objects.filter(session=session).order_by("attempt"))
    assert "Retrying in 20.0 s." in turns[0].error and "Retrying" not in turns[-1].error
    assert all(t.credits == 0 for t in turns)
    assert_every_reservation_closed(rich_owner)


def test_rate_limit_waits_without_retry_after_grow_exponentially_with_jitter(
    providers, enqueued, rich_owner, recorded_waits, settings
):
    settings.PROVIDER_RATE_LIMIT_WINDOW_SECONDS = 60
    providers.fail_always(429)
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)

    run(session)

    assert len(recorded_waits) >= 5
    for attempt, wait in enumerate(recorded_waits[:5]):
        assert 2**attempt / 2 <= wait <= 2**attempt  # 0.5-1, 1-2, 2-4, 4-8, 8-16 s
    assert sum(recorded_waits) <= 60
    assert session.status == Status.FAILED


# --- 10. Partial replies are charged by what the provider reported -----------------------------------------


def test_a_broken_anthropic_stream_charges_the_reported_input_and_estimates_only_the_output(
    providers, enqueued, rich_owner, fast_retries, client
):
    providers.disconnect_next(after_chunks=3)
    providers.reply(scored_reply(WRITER_DOC, 7, 7), scored_reply(WRITER_DOC, 7, 7), scored_reply(EDITOR_DOC, 8, 8))
    session = two_agent_session(rich_owner, max_rounds=1)
    start(session, rich_owner)

    run(session)

    broken, whole = Turn.objects.filter(session=session, agent_name="Writer").order_by("attempt")
    sent = providers.generation_requests()[0]
    reported_input = count_tokens(sent.system_text) + count_tokens(sent.user_text)  # message_start's count
    assert broken.status == Turn.TurnStatus.INCOMPLETE
    assert broken.input_tokens == reported_input == whole.input_tokens  # as reported, not a high estimate
    assert broken.output_tokens == -(-len(broken.output_text) // 4)  # the 3 chunks received, estimated
    assert broken.usage_estimated is True and whole.usage_estimated is False
    assert broken.credits < whole.credits
    assert session.credits_used == sum(t.credits for t in Turn.objects.filter(session=session))
    client.force_login(rich_owner)
    assert "(partly estimated)" in card_html(client, session)


def test_an_openai_stream_broken_before_any_text_charges_nothing(providers, enqueued, rich_owner, fast_retries):
    session = two_agent_session(rich_owner, max_rounds=1)
    session.agents.filter(name="Writer").update(active=False)  # the OpenAI-style editor calls first
    providers.disconnect_next(after_chunks=0)
    providers.reply(scored_reply(EDITOR_DOC, 8, 8), scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    broken = Turn.objects.filter(session=session, agent_name="Editor").order_by("attempt").first()
    assert broken.status == Turn.TurnStatus.FAILED and broken.credits == 0
    assert broken.input_tokens == 0 and not broken.usage_estimated
    assert session.status == Status.COMPLETED


# --- 12. Prompt caching where it can work ---------------------------------------------------------------


def test_a_long_stable_prefix_is_cached_and_cache_reads_show_on_the_turn(providers, enqueued, rich_owner, client):
    session = two_agent_session(rich_owner, max_rounds=2)
    _with_reference(session, 6_000)  # role, rubric, brief and this reference: over 1,024 tokens
    providers.reply(*[scored_reply(WRITER_DOC, 7, 7), scored_reply(EDITOR_DOC, 8, 8)] * 2)
    start(session, rich_owner)

    run(session)

    first = providers.generation_requests()[0]
    assert first.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    round_one, round_two = Turn.objects.filter(session=session, agent_name="Writer").order_by("round")
    assert round_one.cache_write_tokens > 1024 and round_one.cached_tokens == 0
    assert round_two.cached_tokens == round_one.cache_write_tokens
    client.force_login(rich_owner)
    page = card_html(client, session)
    assert f"{round_two.cached_tokens} read from the prompt cache" in page
    assert f"{round_one.cache_write_tokens} written to the prompt cache" in page


# --- 11. Settings that are not sent ----------------------------------------------------------------------------


def test_the_builder_says_per_model_whether_temperature_is_sent(rich_owner, client):
    session = two_agent_session(rich_owner, max_rounds=1)
    priced_model("openai", "gpt-5-mini", display_name="GPT-5 mini")
    client.force_login(rich_owner)

    page = client.get(reverse("session_edit", args=[session.pk])).content.decode()

    # The Anthropic writer's model never receives it; the OpenAI-compatible editor's does.
    assert "Not sent to claude-test: it uses its own default." in page
    assert "Sent to local-llama." in page
    ignored = page.split("Ignored by ", 1)[1].split(".</span>", 1)[0]
    assert "GPT-5 mini" in ignored and "claude-test" in ignored and "local-llama" not in ignored


# --- 7. Scores written with a decimal comma, in other languages and scripts -----------------------------------


@pytest.mark.parametrize(
    "evaluation, expected",
    [
        ("<evaluation>\nClarity: 8,5/10\nEvidence: 7,5/10\n</evaluation>", {"Clarity": 8.5, "Evidence": 7.5}),
        ('<evaluation>{"scores": {"Clarity": "8,5", "Evidence": 6,5}}</evaluation>', {"Clarity": 8.5, "Evidence": 6.5}),
        ("<evaluation>\nClarity : 8,5 sur 10\nEvidence : 9 sur 10\n</evaluation>", {"Clarity": 8.5, "Evidence": 9.0}),
        ("<evaluation>\nClarity：８／１０\nEvidence：7,5/10\n</evaluation>", {"Clarity": 8.0, "Evidence": 7.5}),
    ],
    ids=["comma-lines", "comma-json", "french-sur", "full-width"],
)
def test_scores_with_decimal_commas_and_other_number_formats_are_read_exactly(
    providers, enqueued, rich_owner, evaluation, expected
):
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(f"{WRITER_DOC}\n\n{evaluation}", scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    assert turn_of(session, "Writer").scores == expected


def test_criteria_named_in_other_scripts_are_found(providers, enqueued, rich_owner):
    session = two_agent_session(rich_owner, max_rounds=1)
    writer = session.agents.get(name="Writer")
    writer.criteria.all().delete()
    writer.criteria.create(name="明晰さ", weight=1)
    writer.criteria.create(name="Clarté", weight=1)
    writer.criteria.create(name="Ясность", weight=1)
    providers.reply(
        f"{WRITER_DOC}\n\n<evaluation>\n明晰さ：8,5/10\nClarté : 7 sur 10\nЯсность: 9 из 10\n</evaluation>",
        scored_reply(EDITOR_DOC, 8, 8),
    )
    start(session, rich_owner)

    run(session)

    assert turn_of(session, "Writer").scores == {"明晰さ": 8.5, "Clarté": 7.0, "Ясность": 9.0}


# --- 8. Score lines without tags ---------------------------------------------------------------------------------


def test_untagged_score_lines_are_split_from_the_document_and_never_become_feedback(providers, enqueued, rich_owner):
    reply = f"{WRITER_DOC}\n\nClarity: 10/10\nEvidence: 9/10\nOverall I would rate this 10.0 out of 10.\n"
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(reply, scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    writer = turn_of(session, "Writer")
    assert writer.scores == {"Clarity": 10.0, "Evidence": 9.0}
    first_version = DocumentVersion.objects.get(turn=writer).content
    assert first_version.strip() == WRITER_DOC
    assert "Trees cool streets" not in writer.feedback
    # The editor's prompt carries the document once, as the document.
    editor_prompt = providers.generation_requests()[1].user_text
    assert editor_prompt.count("Trees cool streets") == 1
    assert "10/10" not in editor_prompt


def test_scores_inside_the_prose_give_scores_but_no_feedback(providers, enqueued, rich_owner):
    reply = (
        WRITER_DOC
        + "\n\nI'd rate the clarity 9 out of 10 so far, and the evidence 8 out of 10, before the close.\n\nEnd."
    )
    session = two_agent_session(rich_owner, max_rounds=1)
    providers.reply(reply, scored_reply(EDITOR_DOC, 8, 8))
    start(session, rich_owner)

    run(session)

    writer = turn_of(session, "Writer")
    assert writer.scores == {"Clarity": 9.0, "Evidence": 8.0}
    assert writer.feedback == ""  # never the document's prose
    assert "Trees cool streets" not in providers.generation_requests()[1].user_text.split("</document>")[1]
