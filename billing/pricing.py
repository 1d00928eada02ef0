"""Credits for model usage.

Rules (also in docs/billing.md):

- 1 credit = $0.001 (a tenth of a US cent) of provider cost at a credit multiplier of 1.0.
- ``input_tokens`` are the *uncached* input tokens, billed at the catalogue's input price;
  ``cached_tokens`` are cache reads, billed at the cached-input price (the input price when the
  catalogue has none); ``output_tokens`` at the output price. Prices are USD per million tokens.
- credits = ceil(provider cost in USD × credit multiplier × 1000). Always an integer, always
  rounded UP, so a call with any usage costs at least 1 credit.
- The demo provider costs $0, but its calls still cost credits so every credit path is exercised:
  ceil((input + cached + output) / 1000 × multiplier), i.e. 1 credit per started 1,000 tokens.
- A model without prices is an error (UnpricedModel), never a silent zero.

Worked example: a model priced $3.00 input, $0.30 cached input, $15.00 output per million tokens,
credit multiplier 1.25, a call with 12,000 input, 8,000 cached and 1,500 output tokens:

    cost    = 12,000 × 3.00/1e6 + 8,000 × 0.30/1e6 + 1,500 × 15.00/1e6
            = 0.036 + 0.0024 + 0.0225 = $0.0609
    credits = ceil(0.0609 × 1.25 × 1000) = ceil(76.125) = 77
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING

from orchestration.tokens import estimate_tokens as estimate_tokens  # re-exported for callers of billing

if TYPE_CHECKING:
    from orchestration.models import Agent, LLMModel, WritingSession

MILLION = Decimal(1_000_000)
CREDITS_PER_USD = Decimal(1000)
DEMO_TOKENS_PER_CREDIT = Decimal(1000)
PROMPT_OVERHEAD_TOKENS = 400  # system prompt, rubric and evaluation instructions


class UnpricedModel(ValueError):
    """The catalogue has no price for this model: it cannot be used."""


def _check_tokens(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")


def provider_cost_usd(*, model: LLMModel, input_tokens: int, cached_tokens: int, output_tokens: int) -> Decimal:
    """What the provider charges for one call, in USD (exact Decimal). The demo model costs 0."""
    _check_tokens(input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens)
    if model.is_demo:
        return Decimal(0)
    input_price, output_price = model.input_price_per_mtok, model.output_price_per_mtok
    if input_price is None or output_price is None:  # model.is_priced, spelt out for the type checker
        raise UnpricedModel(f"{model} has no price in the model catalogue")
    cached_price = model.cached_input_price_per_mtok
    if cached_price is None:
        cached_price = input_price
    total = (
        input_tokens * Decimal(input_price)
        + cached_tokens * Decimal(cached_price)
        + output_tokens * Decimal(output_price)
    )
    return total / MILLION


def credits_for_usage(*, model: LLMModel, input_tokens: int, cached_tokens: int, output_tokens: int) -> int:
    """Credits charged for one call: integer, rounded up (see the module docstring)."""
    multiplier = Decimal(model.credit_multiplier)
    if model.is_demo:
        _check_tokens(input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens)
        raw = Decimal(input_tokens + cached_tokens + output_tokens) / DEMO_TOKENS_PER_CREDIT * multiplier
    else:
        cost = provider_cost_usd(
            model=model, input_tokens=input_tokens, cached_tokens=cached_tokens, output_tokens=output_tokens
        )
        raw = cost * multiplier * CREDITS_PER_USD
    return int(raw.to_integral_value(rounding=ROUND_CEILING))


def _call_credits(agent: Agent, prompt_tokens: int, output_tokens: int) -> int:
    """Credits for one call of `agent` (output capped at its model's limit); 0 when its model has no price."""
    if not (agent.model.is_demo or agent.model.is_priced):
        return 0
    output_tokens = min(output_tokens, agent.model.max_output_tokens or output_tokens)
    return credits_for_usage(
        model=agent.model, input_tokens=prompt_tokens, cached_tokens=0, output_tokens=output_tokens
    )


def estimate_session_credits(session: WritingSession) -> tuple[int, int]:
    """(low, high) credits for running a session from where it is to its max rounds.

    low: one round in which every active agent reads the brief, references and document and writes
    a quarter of its max output (a run may stop early on a score threshold or convergence).
    high: every remaining round, every agent writing its full max output (plus its thinking budget or
    reasoning allowance), with the document growing by the longest output each round. Agents whose
    model has no price are left out (the engine refuses to start them; see
    orchestration.services.validate_for_start).
    """
    from orchestration.flows import get_policy
    from orchestration.reasoning import plan_for_agent

    agents = [a for a in session.agents.select_related("model").all() if a.active]
    if not agents:
        return (0, 0)
    references = sum(estimate_tokens(r.content) for r in session.references.all())
    reads = getattr(get_policy(session.flow), "reference_tokens", None)
    if reads is not None:  # a flow that reads retrieved passages, not whole references (the pipeline)
        references = min(references, reads(session))
    base = estimate_tokens(session.brief) + estimate_tokens(session.document) + references + PROMPT_OVERHEAD_TOKENS
    rounds = max(1, session.max_rounds - session.current_round)

    # Thinking / reasoning tokens are billed as output: a call may generate its answer limit plus its
    # thinking budget (orchestration.reasoning), and that total is what the engine reserves per turn.
    outputs = {a.pk: plan_for_agent(a).max_tokens for a in agents}
    # Calls per round come from the flow (orchestration.flows): every parallel editor or critic is a call
    # of its own; an agent whose role the flow does not use makes none; the synthesizer or moderator also
    # reads every review; a roundtable without a starting document adds the moderator's first draft.
    shape = get_policy(session.flow).call_shape(session, [a.role for a in agents])
    if shape.max_rounds is not None:  # e.g. a planned run is one round whatever max_rounds says
        rounds = min(rounds, max(1, shape.max_rounds - session.current_round))
    calls = dict(zip([a.pk for a in agents], shape.calls_per_round, strict=True))
    reviewers = [a for a in agents if calls[a.pk] and (a.role or "").strip().lower() in shape.reviewer_roles]
    readers = {a.pk for a in agents if calls[a.pk] and (a.role or "").strip().lower() in shape.reader_roles}

    def reviews(quarter: bool) -> int:
        return sum(max(1, outputs[r.pk] // 4) if quarter else outputs[r.pk] for r in reviewers)

    def prompt(agent: Agent, document_tokens: int, quarter: bool) -> int:
        extra = reviews(quarter) if agent.pk in readers else 0
        return document_tokens + estimate_tokens(agent.role_prompt) + extra

    extra_first = [a for a in agents if a.pk in shape.extra_first_round_calls]
    low = sum(calls[a.pk] * _call_credits(a, prompt(a, base, True), max(1, outputs[a.pk] // 4)) for a in agents)
    low += sum(_call_credits(a, base + estimate_tokens(a.role_prompt), max(1, outputs[a.pk] // 4)) for a in extra_first)
    high = sum(_call_credits(a, base + estimate_tokens(a.role_prompt), outputs[a.pk]) for a in extra_first)
    document = base
    writers = [a for a in agents if calls[a.pk] and a not in reviewers] or agents
    growth = max(a.max_output_tokens for a in writers)  # reviews and thinking never enter the document
    for _ in range(rounds):
        high += sum(calls[a.pk] * _call_credits(a, prompt(a, document, False), outputs[a.pk]) for a in agents)
        document += growth
    return (low, high)
