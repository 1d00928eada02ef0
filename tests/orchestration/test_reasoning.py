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
    # Fits beside 1,024 output tokens, but not beside 1,024 + 4,000: it must be cut. (~6,700 tokens at
    # orchestration.tokens' 4 characters a token: under the 12,000 - 5,024 = 6,976 the start check allows,
    # over it once the prompt's own instructions are added.)
    ReferenceDocument.objects.create(session=session, title="Field notes", content="Notes on street trees. " * 1166)
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


# --------------------------------------------------------------------------------------------------
# The reasoning panel: live fragments, the page after a reload, owner only, never exported
# --------------------------------------------------------------------------------------------------


def _streaming_thinking_turn(owner):
    from orchestration import events as ev
    from tests.orchestration.engine_helpers import two_agent_session

    session = two_agent_session(owner)
    agent = session.agents.first()
    turn = Turn.objects.create(
        session=session, round=1, agent=agent, agent_name=agent.name, reasoning_output=ReasoningOutput.SUMMARY
    )
    started = ev.append_event(session_id=session.pk, kind="turn_started", payload={"round": 1}, turn_id=turn.pk)
    thoughts = [
        ev.append_event(session_id=session.pk, kind="reasoning", payload={"text": text}, turn_id=turn.pk)
        for text in ["Weigh <shade> ", "against cost."]
    ]
    chunk = ev.append_event(session_id=session.pk, kind="chunk", payload={"text": "# Trees"}, turn_id=turn.pk)
    return session, turn, [started, *thoughts, chunk]


def test_live_fragments_fill_the_reasoning_panel_once_and_escaped(owner):
    from orchestration import events as ev
    from orchestration.live import render_fragments

    session, turn, events = _streaming_thinking_turn(owner)
    cache: dict = {}
    for event in events:
        fragments, _, _ = render_fragments(session.pk, [ev.serialize(event)], cache)
    assert cache[("reasoning", turn.pk)] == "Weigh <shade> against cost."
    more = ev.append_event(session_id=session.pk, kind="reasoning", payload={"text": " Done."}, turn_id=turn.pk)
    fragments, _, _ = render_fragments(session.pk, [ev.serialize(more)], cache)
    [panel] = [f for f in fragments if f["target"] == f"turn-{turn.pk}-reasoning-body"]
    assert panel["html"] == "Weigh &lt;shade&gt; against cost. Done."
    assert not any(f["target"] == f"turn-{turn.pk}-body" for f in fragments)  # the text is untouched

    # A catch-up batch renders the card whole, its reasoning once, apart from the text.
    fragments, _, _ = render_fragments(session.pk, [ev.serialize(e) for e in events], {})
    [card] = [f["html"] for f in fragments if f["target"] == f"turn-{turn.pk}"]
    assert card.count("Weigh &lt;shade&gt; against cost.") == 1
    assert "a summary" in card  # Claude 4 summarises its thinking: the panel says so
    assert "<details" in card and "<details open" not in card  # collapsed by default


def test_the_page_shows_saved_reasoning_to_the_owner_and_never_to_others(owner, outsider, client):
    session, turn, _ = _streaming_thinking_turn(owner)
    Turn.objects.filter(pk=turn.pk).update(
        status=Turn.TurnStatus.COMPLETED, output_text="# Trees", reasoning="Saved thoughts.", reasoning_tokens=7
    )
    WritingSession.objects.filter(pk=session.pk).update(status="completed", reasoning_tokens=7)

    client.force_login(owner)
    page = client.get(session.get_absolute_url()).content.decode()
    assert "Saved thoughts." in page
    assert "7 reasoning" in page
    assert 'data-testid="reasoning-total">7<' in page  # the session's total, in the header

    client.force_login(outsider)
    assert client.get(session.get_absolute_url()).status_code == 404


def test_exports_never_include_the_reasoning(owner, client):
    from django.urls import reverse

    from orchestration.models import DocumentVersion

    session, turn, _ = _streaming_thinking_turn(owner)
    Turn.objects.filter(pk=turn.pk).update(
        status=Turn.TurnStatus.COMPLETED, output_text="# Trees\n\nShade.", reasoning="Secret weighing."
    )
    WritingSession.objects.filter(pk=session.pk).update(document="# Trees\n\nShade.")
    DocumentVersion.objects.create(session=session, number=1, content="# Trees\n\nShade.", turn=turn)
    client.force_login(owner)
    for fmt in ("md", "html", "docx"):
        response = client.get(reverse("document_export", args=[session.pk, fmt]))
        assert response.status_code == 200
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert b"Secret weighing" not in body
        assert b"Shade" in body or fmt == "docx"


def test_staff_set_a_models_reasoning_capability_in_the_admin(admin_client):
    from django.urls import reverse

    data = {
        "provider": "openai",
        "model_id": "o4-mini",
        "display_name": "o4-mini",
        "context_window": "200000",
        "max_output_tokens": "100000",
        "input_price_per_mtok": "1.10",
        "cached_input_price_per_mtok": "",
        "output_price_per_mtok": "4.40",
        "credit_multiplier": "1.00",
        "reasoning": "thinking_budget",
        "reasoning_output": "hidden",
        "enabled": "on",
        "sort_order": "100",
    }
    url = reverse("admin:orchestration_llmmodel_add")
    refused = admin_client.post(url, data)
    assert "Extended thinking with a budget is an Anthropic parameter." in refused.content.decode()

    assert admin_client.post(url, {**data, "reasoning": "effort"}).status_code == 302
    model = LLMModel.objects.get(provider="openai", model_id="o4-mini")
    assert (model.reasoning, model.reasoning_output) == (Reasoning.EFFORT, ReasoningOutput.HIDDEN)


# --------------------------------------------------------------------------------------------------
# The adapters and the fake server's rules, through the real SDKs
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def sdk_providers(providers, settings):
    """`providers` with 5 s timeouts (set before any adapter is built: `providers` emptied the cache)."""
    settings.PROVIDER_TIMEOUT_SECONDS = 5.0
    return providers


async def _events(provider: str, **request):
    from orchestration.providers import ModelRequest, get_adapter

    base = {
        "provider": provider,
        "model_id": "fake-model",
        "system": "You write.",
        "user": "Write.",
        "max_tokens": 3000,
    }
    adapter = get_adapter(provider)
    return [event async for event in adapter.stream(ModelRequest(**{**base, **request}))]


@pytest.mark.django_db
async def test_the_anthropic_adapter_yields_thinking_before_text_and_counts_it(sdk_providers):
    from orchestration.providers import ReasoningDelta, StreamEnd, TextDelta

    sdk_providers.reply("The answer.", thinking="Step one. Step two.")
    events = await _events("anthropic", reasoning="thinking_budget", thinking_budget=2048)

    kinds = [type(e).__name__ for e in events]
    assert kinds.index("TextDelta") > max(i for i, k in enumerate(kinds) if k == "ReasoningDelta")
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Step one. Step two."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The answer."
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage.reasoning_tokens == 5  # the server's thinking_tokens: 19 characters in 4-char chunks
    assert end.usage.output_tokens == 5 + 3
    body = sdk_providers.generation_requests()[0].json
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and body["max_tokens"] == 3000


@pytest.mark.django_db
async def test_the_fake_server_refuses_what_the_real_apis_refuse(sdk_providers):
    import anthropic
    import openai

    claude = anthropic.AsyncAnthropic(api_key="k", base_url=sdk_providers.url, max_retries=0)
    gpt = openai.AsyncOpenAI(api_key="k", base_url=sdk_providers.openai_url, max_retries=0)
    message = {"role": "user", "content": "Hi"}
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1024"):
        await claude.messages.create(
            model="m", max_tokens=4000, messages=[message], thinking={"type": "enabled", "budget_tokens": 500}
        )
    with pytest.raises(anthropic.BadRequestError, match="must be greater than"):
        await claude.messages.create(
            model="m", max_tokens=2000, messages=[message], thinking={"type": "enabled", "budget_tokens": 2000}
        )
    with pytest.raises(openai.BadRequestError, match="temperature"):
        await gpt.chat.completions.create(model="gpt-5", messages=[message], temperature=0.7)
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        await gpt.chat.completions.create(model="gpt-4.1", messages=[message], reasoning_effort="high")
    # ...and a reasoning model reports its hidden reasoning in the usage details.
    sdk_providers.reply("Hello.", thinking="Hidden thoughts here.")
    reply = await gpt.chat.completions.create(model="gpt-5", messages=[message], reasoning_effort="low")
    assert reply.usage.completion_tokens_details.reasoning_tokens == 6
    assert reply.usage.completion_tokens == 6 + 2
    assert reply.choices[0].message.content == "Hello."


# --------------------------------------------------------------------------------------------------
# <think> blocks of OpenAI-compatible models stream into the reasoning, live
# --------------------------------------------------------------------------------------------------


def _split_in_pieces(text: str, cut: int) -> tuple[str, str]:
    from orchestration.providers.think import ThinkTagSplitter

    splitter = ThinkTagSplitter()
    parts = [text[i : i + cut] for i in range(0, len(text), cut)]
    out = [pair for part in parts for pair in splitter.feed(part)] + splitter.flush()
    return (
        "".join(piece for kind, piece in out if kind == "reasoning"),
        "".join(piece for kind, piece in out if kind == "text"),
    )


@pytest.mark.parametrize(
    ("reply", "reasoning", "text"),
    [
        ("<think>Plan it.</think>\n\n# Essay", "Plan it.", "# Essay"),
        ("\n <THINK >Plan it.< /think>Answer", "Plan it.", "Answer"),
        ("<thinking>a < b, so</thinking>Answer", "a < b, so", "Answer"),
        ("<think>Cut off while thinking", "Cut off while thinking", ""),
        ("<think>\n  Line one.\n\n  Line two.\n</think>\n\nAnswer", "Line one.\n\n  Line two.", "Answer"),
        ("# Essay <think> in the middle stays text", "", "# Essay <think> in the middle stays text"),
        ("<b>Bold start</b> is text", "", "<b>Bold start</b> is text"),
        ("<", "", "<"),
        ("", "", ""),
    ],
)
def test_a_leading_think_block_is_split_whatever_the_chunk_boundaries(reply, reasoning, text):
    for cut in range(1, len(reply) + 2):
        assert _split_in_pieces(reply, cut) == (reasoning, text), f"chunks of {cut}"


@pytest.mark.django_db(transaction=True)
def test_a_compatible_models_think_block_streams_into_the_reasoning_not_the_card(providers, rich_owner):
    from orchestration.models import SessionEvent
    from tests.orchestration.engine_helpers import priced_model

    local = priced_model("compatible", "qwen3-local", max_output_tokens=8192)
    session = _thinking_session(rich_owner, editor_model=local)
    session.agents.filter(name="Editor").update(reasoning_effort="")
    thought = "The writer's claim about cooling needs a number; I will add one."
    providers.reply(_reply("# Trees\n\nOne."), thinking="")
    providers.reply(f"<think>{thought}</think>\n" + _reply("# Trees\n\nShade cools streets by 2 degrees."))

    _run(session, rich_owner)

    editor_turn = Turn.objects.get(session=session, agent_name="Editor")
    assert editor_turn.reasoning == thought
    assert editor_turn.reasoning_tokens > 0
    assert session.document == "# Trees\n\nShade cools streets by 2 degrees."
    # It streamed live as reasoning; the card's text chunks never carried it.
    events = SessionEvent.objects.filter(turn=editor_turn)
    assert "".join(e.payload["text"] for e in events.filter(kind="reasoning")) == thought
    chunks = "".join(e.payload["text"] for e in events.filter(kind="chunk"))
    assert "think" not in chunks and "needs a number" not in chunks
