"""Reasoning settings per agent: what is sent, how many tokens a turn may generate, what is valid.

Two controls, chosen by the catalogue's `LLMModel.reasoning` capability (staff edit it in the admin):

- "thinking_budget" (Anthropic extended thinking): `thinking={"type": "enabled", "budget_tokens": N}`.
  The API's rules (anthropic.types.ThinkingConfigEnabledParam and Anthropic's extended-thinking docs):
  N >= 1024 and N < max_tokens, because max_tokens counts thinking and answer together; temperature,
  top_k and forced tool use are refused while thinking is on. Atelier sends
  max_tokens = the agent's answer limit + N, so the answer keeps its whole limit.
- "effort" (OpenAI o-series / gpt-5): `reasoning_effort` low / medium / high; no temperature (reasoning
  models refuse any but the default) and `max_completion_tokens`, which counts reasoning and answer
  together. Reasoning has no budget there, so Atelier adds an allowance per effort (below) to the
  answer limit; the API stops at that total whatever the effort.

Either way the total (`max_tokens` of the request) is what the turn may generate and be billed for as
output, so prompt fitting leaves room for it in the context window and the credit reservation is sized
from it: a thinking turn can never overdraw its reservation.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestration.models import Agent, LLMModel, Reasoning, ReasoningEffort, ReasoningOutput

MIN_THINKING_BUDGET = 1024
# Tokens of reasoning allowed on top of the answer for OpenAI reasoning models, per effort. OpenAI
# advises leaving room for reasoning; these keep a high-effort turn from ending with no answer while
# keeping reservations proportionate. "" is the model's default effort (medium).
# Keyed by ReasoningEffort values (plain strings: the stored field value is looked up directly).
EFFORT_ALLOWANCE: dict[str, int] = {
    ReasoningEffort.LOW: 4_096,
    ReasoningEffort.MEDIUM: 12_288,
    ReasoningEffort.HIGH: 32_768,
    ReasoningEffort.DEFAULT: 12_288,
}

THINKING_HELP = (
    "Claude thinks before answering, within this many tokens (at least 1,024). Thinking tokens are "
    "billed as output. Atelier asks for your max output tokens plus this budget, which together must fit "
    "the model's output limit. While thinking is on the API refuses temperature, so it is not sent."
)
_LOW, _MEDIUM, _HIGH = (EFFORT_ALLOWANCE[e] for e in ("low", "medium", "high"))
EFFORT_HELP = (
    "How hard the model reasons before answering. Reasoning tokens are billed as output and are not "
    "shown by OpenAI (only counted). Reasoning models refuse temperature, so it is not sent; Atelier "
    f"allows {_LOW:,} / {_MEDIUM:,} / {_HIGH:,} reasoning tokens on top of your max output tokens."
)


@dataclass(frozen=True)
class ReasoningPlan:
    """What one call sends. `max_tokens` is everything the call may generate (thinking included)."""

    reasoning: str  # the model's capability ("" when it has none)
    thinking_budget: int  # 0 = no thinking parameter
    reasoning_effort: str  # "" = not sent
    max_tokens: int
    output: str  # ReasoningOutput of the model, or "" when no reasoning was asked for

    @property
    def thinks(self) -> bool:
        return self.thinking_budget > 0 or self.reasoning == Reasoning.EFFORT


def plan_for(*, model: LLMModel, max_output_tokens: int, thinking_budget: int, reasoning_effort: str) -> ReasoningPlan:
    """The reasoning parameters and the total output allowance for one call of `model`.

    `max_output_tokens` is the agent's answer limit. A model without the capability gets no reasoning
    parameter at all, whatever the agent asks for (an agent may fall back to such a model). A thinking
    budget that cannot fit the model's output limit (staff lowered it, or a fallback model) shrinks, and
    thinking is left off when fewer than 1,024 tokens remain.
    """
    capability = getattr(model, "reasoning", "") or ""
    limit = getattr(model, "max_output_tokens", 0) or 0
    if capability == Reasoning.THINKING_BUDGET and thinking_budget > 0:
        budget = thinking_budget
        if limit:
            budget = min(budget, limit - max_output_tokens)
        if budget >= MIN_THINKING_BUDGET:
            return ReasoningPlan(capability, budget, "", max_output_tokens + budget, model.reasoning_output)
        return ReasoningPlan(capability, 0, "", max_output_tokens, "")
    if capability == Reasoning.EFFORT:
        total = max_output_tokens + EFFORT_ALLOWANCE.get(reasoning_effort, EFFORT_ALLOWANCE[""])
        if limit:
            total = max(max_output_tokens, min(total, limit))
        return ReasoningPlan(capability, 0, reasoning_effort or "", total, model.reasoning_output)
    return ReasoningPlan(capability, 0, "", max_output_tokens, "")


def plan_for_agent(agent: Agent, model: LLMModel | None = None) -> ReasoningPlan:
    """plan_for with the agent's settings; `model` defaults to the agent's own (pass the fallback)."""
    return plan_for(
        model=model or agent.model,
        max_output_tokens=agent.max_output_tokens,
        thinking_budget=agent.thinking_budget_tokens,
        reasoning_effort=agent.reasoning_effort,
    )


def validate(
    *, model: LLMModel, max_output_tokens: int, thinking_budget: int, reasoning_effort: str, strict: bool = True
) -> dict[str, str]:
    """Problems with an agent's reasoning settings for `model`, keyed by form field; empty = valid.

    strict: settings for a control the model does not have are errors (for input: nothing is accepted
    that would not be sent). Not strict (checking a saved team before a run): such settings are simply
    not sent (see plan_for), so only the rules of the control the model has are checked.
    """
    errors: dict[str, str] = {}
    capability = getattr(model, "reasoning", "") if model is not None else ""
    name = getattr(model, "display_name", "") or "This model"
    if thinking_budget and (strict or capability == Reasoning.THINKING_BUDGET):
        if capability != Reasoning.THINKING_BUDGET:
            errors["thinking_budget_tokens"] = f"{name} has no extended thinking; set the budget to 0."
        elif thinking_budget < MIN_THINKING_BUDGET:
            errors["thinking_budget_tokens"] = (
                f"The thinking budget must be at least {MIN_THINKING_BUDGET:,} tokens (or 0 for no thinking)."
            )
        elif model.max_output_tokens and max_output_tokens + thinking_budget > model.max_output_tokens:
            errors["thinking_budget_tokens"] = (
                f"Max output tokens plus the thinking budget ({max_output_tokens + thinking_budget:,}) must fit "
                f"{name}'s output limit of {model.max_output_tokens:,} tokens."
            )
    if reasoning_effort and (strict or capability == Reasoning.EFFORT):
        if capability != Reasoning.EFFORT:
            errors["reasoning_effort"] = f"{name} takes no reasoning effort; leave it at the model default."
        elif reasoning_effort not in ReasoningEffort.values:
            errors["reasoning_effort"] = "Choose low, medium or high."
    return errors


def output_label(output: str) -> str:
    """How the reasoning panel introduces what it shows."""
    if output == ReasoningOutput.SUMMARY:
        return "Reasoning (a summary: the provider returns a summary of the model's thinking, not all of it)"
    return "Reasoning"
