"""Reasoning models: catalogue capability, per-agent settings, the turn's reasoning kept apart."""

from __future__ import annotations

import pytest

from orchestration.catalogue import seed_catalogue, seed_reasoning
from orchestration.models import LLMModel, Project, Reasoning, ReasoningOutput, Turn, WritingSession

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _catalogue():
    # Transactional tests elsewhere flush the tables the data migration filled; seed again.
    seed_catalogue()


def test_catalogue_marks_claude_thinking_and_gpt5_effort_and_nothing_else():
    claude = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    gpt5 = LLMModel.objects.get(provider="openai", model_id="gpt-5")
    gpt41 = LLMModel.objects.get(provider="openai", model_id="gpt-4.1")

    assert (claude.reasoning, claude.reasoning_output) == (Reasoning.THINKING_BUDGET, ReasoningOutput.SUMMARY)
    assert (gpt5.reasoning, gpt5.reasoning_output) == (Reasoning.EFFORT, ReasoningOutput.HIDDEN)
    assert gpt41.reasoning == Reasoning.NONE


def test_seed_reasoning_leaves_a_row_staff_configured_alone():
    gpt5 = LLMModel.objects.get(provider="openai", model_id="gpt-5")
    gpt5.reasoning = Reasoning.THINKING_BUDGET  # staff's choice, however odd
    gpt5.save()
    LLMModel.objects.filter(provider="openai", model_id="gpt-5-mini").update(reasoning="")

    changed = seed_reasoning()

    assert changed == 1
    assert LLMModel.objects.get(pk=gpt5.pk).reasoning == Reasoning.THINKING_BUDGET
    assert LLMModel.objects.get(provider="openai", model_id="gpt-5-mini").reasoning == Reasoning.EFFORT


def test_a_turn_keeps_its_reasoning_apart_from_its_output(owner):
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="T", brief="B")
    turn = Turn.objects.create(session=session, round=1, output_text="The essay.")

    Turn.objects.filter(pk=turn.pk).update(reasoning="First I will outline.", reasoning_tokens=12)
    turn.refresh_from_db()

    assert turn.output_text == "The essay."
    assert (turn.reasoning, turn.reasoning_tokens) == ("First I will outline.", 12)


# --------------------------------------------------------------------------------------------------
# Thinking turns through the real SDKs against the fake server
# --------------------------------------------------------------------------------------------------

THINKING = "First I list the arguments for shade. Then I weigh the cost of planting against cooling. "


def _thinking_session(owner, *, budget: int = 2048, max_output: int = 1024, writer_model=None, editor_model=None):
    """A writer on a thinking model and an editor on an OpenAI reasoning model, one round."""
    from decimal import Decimal

    from orchestration.models import Agent, Criterion
    from tests.orchestration.engine_helpers import priced_model

    writer_model = writer_model or priced_model(
        "anthropic",
        "claude-thinker",
        max_output_tokens=64_000,
        reasoning=Reasoning.THINKING_BUDGET,
        reasoning_output=ReasoningOutput.SUMMARY,
    )
    editor_model = editor_model or priced_model(
        "openai",
        "gpt-5-test",
        max_output_tokens=128_000,
        input_price_per_mtok=Decimal("1.25"),
        output_price_per_mtok=Decimal("10"),
        reasoning=Reasoning.EFFORT,
        reasoning_output=ReasoningOutput.HIDDEN,
    )
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(
        project=project, title="Trees", brief="Why cities need trees.", max_rounds=1
    )
    writer = Agent.objects.create(
        session=session,
        order=0,
        name="Writer",
        role="writer",
        model=writer_model,
        role_prompt="You are the writer.",
        max_output_tokens=max_output,
        thinking_budget_tokens=budget,
    )
    editor = Agent.objects.create(
        session=session,
        order=1,
        name="Editor",
        role="editor",
        model=editor_model,
        role_prompt="You are the editor.",
        max_output_tokens=max_output,
        reasoning_effort="high",
    )
    for agent in (writer, editor):
        Criterion.objects.create(agent=agent, name="Clarity", weight=1)
    return session


@pytest.fixture
def providers(fake_llm, settings):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_TIMEOUT_SECONDS = 3
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


@pytest.fixture
def rich_owner(owner, monkeypatch):
    from billing.plans import PRO
    from billing.services import get_account, grant_credits

    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda session_id: None)
    account = get_account(owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=owner, amount=1_000_000, key="test:topup", description="test credits")
    return owner


def _run(session, user):
    from orchestration import engine, services

    services.start_session(session=session, user=user)
    outcome = engine.drive(session.pk)
    session.refresh_from_db()
    return outcome


def _reply(document: str, clarity: int = 8) -> str:
    return f'{document}\n\n<evaluation>\n{{"scores": {{"Clarity": {clarity}}}, "feedback": "Good."}}\n</evaluation>'


@pytest.mark.django_db(transaction=True)
def test_a_thinking_turn_streams_reasoning_apart_and_bills_it_as_output(providers, rich_owner):
    from billing.pricing import credits_for_usage
    from orchestration.models import DocumentVersion, SessionEvent

    providers.reply(_reply("# Trees\n\nShade cools streets."), thinking=THINKING)
    providers.reply(_reply("# Trees\n\nShade cools streets by degrees."), thinking="Hidden editor reasoning. " * 8)
    session = _thinking_session(rich_owner)

    assert _run(session, rich_owner) == "finished"

    claude_request, openai_request = providers.generation_requests()
    # Anthropic: thinking on with the budget; max_tokens = answer limit + budget; no sampling settings.
    assert claude_request.json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert claude_request.json["max_tokens"] == 1024 + 2048
    assert "temperature" not in claude_request.json and "top_k" not in claude_request.json
    # OpenAI: the effort, no temperature, and room for reasoning on top of the answer.
    assert openai_request.json["reasoning_effort"] == "high"
    assert "temperature" not in openai_request.json
    assert openai_request.json["max_completion_tokens"] == 1024 + 32_768

    writer_turn, editor_turn = Turn.objects.filter(session=session).order_by("pk")
    assert writer_turn.reasoning == THINKING
    assert writer_turn.reasoning_output == ReasoningOutput.SUMMARY
    thinking_chunks = -(-len(THINKING) // 4)
    assert writer_turn.reasoning_tokens == thinking_chunks
    assert writer_turn.output_tokens > thinking_chunks  # thinking + text, as Anthropic counts them
    assert THINKING.strip() not in writer_turn.output_text
    # OpenAI returns no reasoning text, only its count (inside completion_tokens).
    assert editor_turn.reasoning == ""
    assert editor_turn.reasoning_output == ReasoningOutput.HIDDEN
    assert editor_turn.reasoning_tokens == -(-len("Hidden editor reasoning. " * 8) // 4)
    assert editor_turn.output_tokens > editor_turn.reasoning_tokens

    # Credits charge the reasoning tokens as output tokens.
    for turn in (writer_turn, editor_turn):
        model = turn.agent.model
        expected = credits_for_usage(
            model=model,
            input_tokens=turn.input_tokens,
            cached_tokens=turn.cached_tokens,
            output_tokens=turn.output_tokens,
        )
        assert turn.credits == expected
        assert expected > credits_for_usage(
            model=model,
            input_tokens=turn.input_tokens,
            cached_tokens=turn.cached_tokens,
            output_tokens=turn.output_tokens - turn.reasoning_tokens,
        )
    assert session.reasoning_tokens == writer_turn.reasoning_tokens + editor_turn.reasoning_tokens

    # The thinking never reaches the document, a version, the evaluation or the next agent's prompt.
    assert "arguments for shade" not in session.document
    assert not DocumentVersion.objects.filter(session=session, content__contains="arguments for shade").exists()
    assert "arguments for shade" not in writer_turn.evaluation_raw + writer_turn.feedback
    assert "arguments for shade" not in openai_request.user_text + openai_request.system_text
    # It streamed live in its own events, never in the text chunks.
    events = SessionEvent.objects.filter(session=session, turn=writer_turn)
    assert "".join(e.payload["text"] for e in events.filter(kind="reasoning")) == THINKING
    assert "arguments for shade" not in "".join(e.payload["text"] for e in events.filter(kind="chunk"))


@pytest.mark.django_db(transaction=True)
def test_a_model_without_the_capability_never_gets_reasoning_parameters(providers, rich_owner):
    from decimal import Decimal

    from tests.orchestration.engine_helpers import priced_model

    plain_claude = priced_model("anthropic", "claude-plain", max_output_tokens=8192)
    plain_gpt = priced_model("openai", "gpt-4.1-test", max_output_tokens=32_768, input_price_per_mtok=Decimal("2"))
    # Settings saved for another model (say, before staff removed the capability) stay unsent.
    session = _thinking_session(rich_owner, writer_model=plain_claude, editor_model=plain_gpt)
    providers.reply(_reply("# Trees\n\nOne."), _reply("# Trees\n\nTwo."), thinking=THINKING)

    assert _run(session, rich_owner) == "finished"

    claude_request, openai_request = providers.generation_requests()
    assert "thinking" not in claude_request.json
    assert claude_request.json["max_tokens"] == 1024
    assert "reasoning_effort" not in openai_request.json
    assert openai_request.json["max_completion_tokens"] == 1024
    assert openai_request.json["temperature"] == 0.7  # an ordinary model keeps its temperature
    assert list(Turn.objects.filter(session=session).values_list("status", "reasoning", "reasoning_tokens")) == [
        (Turn.TurnStatus.COMPLETED, "", 0),
        (Turn.TurnStatus.COMPLETED, "", 0),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_reservation_sized_from_the_budget_is_never_exceeded(providers, rich_owner):
    from billing.models import CreditEntry
    from billing.pricing import credits_for_usage

    # The model thinks through its whole budget and then writes past its answer limit: the API stops
    # at max_tokens, and everything billed must fit inside what was reserved before the call.
    session = _thinking_session(rich_owner, budget=1024, max_output=256)
    long_thought = "Weighing every option at length. " * 600
    providers.reply(_reply("# Trees\n\n" + "Shade and more shade. " * 400), thinking=long_thought)
    providers.reply(_reply("# Trees\n\nShort."), thinking="Brief.")

    _run(session, rich_owner)

    writer_turn = Turn.objects.filter(session=session).order_by("pk").first()
    reserved = -CreditEntry.objects.get(idempotency_key=f"turn:{writer_turn.pk}:reserve").amount
    model = writer_turn.agent.model
    assert writer_turn.reasoning_tokens == 1024  # the whole budget
    assert writer_turn.output_tokens == 256 + 1024  # max_tokens: nothing more can be generated
    assert reserved >= credits_for_usage(model=model, input_tokens=0, cached_tokens=0, output_tokens=256 + 1024)
    assert writer_turn.credits <= reserved
    settled = CreditEntry.objects.get(idempotency_key=f"turn:{writer_turn.pk}:settle")
    assert "balance exhausted" not in settled.description


@pytest.mark.django_db(transaction=True)
def test_prompt_fitting_leaves_room_for_the_thinking_budget(providers, rich_owner):
    from orchestration.models import ReferenceDocument
    from tests.fakes.llm_server import count_tokens
    from tests.orchestration.engine_helpers import priced_model

    small = priced_model(
        "anthropic", "claude-small-window", context_window=12_000, max_output_tokens=8_000, reasoning="thinking_budget"
    )
    session = _thinking_session(rich_owner, budget=4_000, max_output=1024, writer_model=small)
    # Fits beside 1,024 output tokens, but not beside 1,024 + 4,000: it must be cut.
    ReferenceDocument.objects.create(session=session, title="Field notes", content="Notes on street trees. " * 1020)
    providers.reply(_reply("# Trees\n\nOne."), _reply("# Trees\n\nTwo."))

    _run(session, rich_owner)

    request = providers.generation_requests()[0]
    prompt_tokens = count_tokens(request.system_text) + count_tokens(request.user_text)
    assert request.json["max_tokens"] == 1024 + 4_000
    assert prompt_tokens + request.json["max_tokens"] <= 12_000
    writer_turn = Turn.objects.filter(session=session).order_by("pk").first()
    assert "Field notes" in writer_turn.prompt_notes


@pytest.mark.django_db(transaction=True)
def test_reasoning_streamed_in_a_compatible_servers_delta_field_is_kept_apart(providers, rich_owner):
    from tests.orchestration.engine_helpers import priced_model

    local = priced_model("compatible", "deepseek-r1-local", max_output_tokens=8192)
    session = _thinking_session(rich_owner, editor_model=local)
    session.agents.filter(name="Editor").update(reasoning_effort="")
    providers.reasoning_field = "reasoning_content"
    providers.reply(_reply("# Trees\n\nOne."), thinking="")
    providers.reply(_reply("# Trees\n\nTwo."), thinking="Let me check the claim about cooling.")

    _run(session, rich_owner)

    editor_turn = Turn.objects.filter(session=session, agent_name="Editor").get()
    assert editor_turn.reasoning == "Let me check the claim about cooling."
    assert editor_turn.reasoning_tokens == 10
    assert "cooling." not in session.document
    assert "reasoning_effort" not in providers.generation_requests()[1].json
