from __future__ import annotations

from decimal import Decimal

import pytest

from billing.pricing import UnpricedModel, credits_for_usage, estimate_session_credits, provider_cost_usd


def test_worked_example_from_the_docs(sonnet):
    # $3 / $0.30 cached / $15 per Mtok, multiplier 1.25: $0.0609 × 1.25 × 1000 = 76.125 -> 77
    assert provider_cost_usd(model=sonnet, input_tokens=12_000, cached_tokens=8_000, output_tokens=1_500) == Decimal(
        "0.0609"
    )
    assert credits_for_usage(model=sonnet, input_tokens=12_000, cached_tokens=8_000, output_tokens=1_500) == 77


def test_any_usage_rounds_up_to_at_least_one_credit(cheap_model):
    assert credits_for_usage(model=cheap_model, input_tokens=1, cached_tokens=0, output_tokens=0) == 1
    assert credits_for_usage(model=cheap_model, input_tokens=0, cached_tokens=0, output_tokens=0) == 0


def test_exact_credit_boundary_is_not_rounded_up(cheap_model):
    # 1,000 output tokens at $0.60/Mtok = $0.0006 -> 0.6 credits -> 1; 5,000 -> exactly 3.
    assert credits_for_usage(model=cheap_model, input_tokens=0, cached_tokens=0, output_tokens=5_000) == 3


def test_cached_tokens_are_cheaper_than_fresh_input(sonnet):
    fresh = credits_for_usage(model=sonnet, input_tokens=100_000, cached_tokens=0, output_tokens=0)
    cached = credits_for_usage(model=sonnet, input_tokens=0, cached_tokens=100_000, output_tokens=0)
    assert (fresh, cached) == (375, 38)  # 0.3 × 1.25 × 1000 = 375; 0.03 × 1.25 × 1000 = 37.5 -> 38


def test_cached_tokens_fall_back_to_the_input_price(cheap_model):
    assert credits_for_usage(model=cheap_model, input_tokens=0, cached_tokens=1_000_000, output_tokens=0) == 150


def test_multiplier_scales_credits(sonnet):
    sonnet.credit_multiplier = Decimal("2.00")
    assert credits_for_usage(model=sonnet, input_tokens=0, cached_tokens=0, output_tokens=1_000_000) == 30_000


def test_demo_costs_nothing_but_one_credit_per_started_thousand_tokens(demo_model):
    assert provider_cost_usd(model=demo_model, input_tokens=5000, cached_tokens=0, output_tokens=500) == 0
    assert credits_for_usage(model=demo_model, input_tokens=1500, cached_tokens=0, output_tokens=500) == 2
    assert credits_for_usage(model=demo_model, input_tokens=1500, cached_tokens=0, output_tokens=501) == 3


def test_unpriced_model_is_an_error(cheap_model):
    cheap_model.output_price_per_mtok = None
    with pytest.raises(UnpricedModel):
        credits_for_usage(model=cheap_model, input_tokens=10, cached_tokens=0, output_tokens=10)


def test_negative_tokens_are_refused(cheap_model):
    with pytest.raises(ValueError):
        credits_for_usage(model=cheap_model, input_tokens=-1, cached_tokens=0, output_tokens=0)


def test_estimate_grows_with_agents_and_rounds(owner, sonnet, cheap_model):
    from orchestration.models import Agent, Project, WritingSession

    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="x" * 4000, max_rounds=1)
    Agent.objects.create(session=session, name="A", model=cheap_model, role_prompt="Write.", max_output_tokens=1000)
    low1, high1 = estimate_session_credits(session)
    assert 0 < low1 <= high1
    session.max_rounds = 4
    _, high4 = estimate_session_credits(session)
    Agent.objects.create(session=session, name="B", model=sonnet, role_prompt="Edit.", max_output_tokens=1000)
    low2, high4b = estimate_session_credits(session)
    assert high4 > high1 and high4b > high4 and low2 > low1


def test_estimate_includes_the_thinking_budget_billed_as_output(owner, sonnet):
    from orchestration.models import Agent, Project, Reasoning, WritingSession

    sonnet.reasoning = Reasoning.THINKING_BUDGET
    sonnet.max_output_tokens = 64_000
    sonnet.save()
    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="x" * 4000, max_rounds=1)
    agent = Agent.objects.create(session=session, name="A", model=sonnet, role_prompt="Write.", max_output_tokens=1000)
    _, without = estimate_session_credits(session)
    agent.thinking_budget_tokens = 8000
    agent.save()
    _, with_thinking = estimate_session_credits(session)

    # 8,000 more output tokens at $15/M x 1.25 = 150 credits more.
    assert with_thinking - without == pytest.approx(150, abs=1)


def test_estimate_counts_each_parallel_call_and_what_the_merger_reads(owner, sonnet):
    """Editorial, one round: the writer, every editor (a call each) and the synthesizer, who also reads
    every review. An agent whose role the flow does not use costs nothing."""
    from billing.pricing import PROMPT_OVERHEAD_TOKENS, estimate_tokens
    from orchestration.models import Agent, Flow, Project, WritingSession

    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(
        project=project, title="S", brief="x" * 4000, max_rounds=1, flow=Flow.EDITORIAL
    )
    roles = ["writer", "editor", "editor", "editor", "synthesizer"]
    for order, role in enumerate(roles):
        Agent.objects.create(
            session=session,
            order=order,
            name=f"A{order}",
            role=role,
            model=sonnet,
            role_prompt="Go.",
            max_output_tokens=1000,
        )
    base = estimate_tokens(session.brief) + PROMPT_OVERHEAD_TOKENS + estimate_tokens("Go.")

    def call(input_tokens: int) -> int:
        return credits_for_usage(model=sonnet, input_tokens=input_tokens, cached_tokens=0, output_tokens=1000)

    expected_high = 4 * call(base) + call(base + 3 * 1000)
    _, high = estimate_session_credits(session)
    assert high == expected_high
    Agent.objects.create(session=session, order=9, name="Idle", role="critic", model=sonnet, role_prompt="Go.")
    assert estimate_session_credits(session)[1] == expected_high

    # The same team as a roundtable (3 critics + moderator) with no starting document: the moderator
    # drafts first, then moderates with the three critiques in its prompt.
    session.flow = Flow.ROUNDTABLE
    session.save()
    session.agents.filter(role="editor").update(role="critic")
    session.agents.filter(role="synthesizer").update(role="moderator")
    session.agents.filter(name="Idle").delete()
    session.agents.filter(role="writer").delete()
    assert estimate_session_credits(session)[1] == 3 * call(base) + call(base + 3000) + call(base)
