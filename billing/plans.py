"""The one plan catalogue: tiers, prices and limits. Nothing else in the code base hard-codes them.

1 credit = $0.001 of provider cost at a credit multiplier of 1.0 (see billing.pricing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.models import LLMModel

FREE = "free"
STARTER = "starter"
PRO = "pro"

# Model tiers, from cheapest to most expensive (see model_tier()).
TIER_DEMO = "demo"
TIER_ECONOMY = "economy"
TIER_STANDARD = "standard"
TIER_PREMIUM = "premium"
TIER_ORDER = [TIER_DEMO, TIER_ECONOMY, TIER_STANDARD, TIER_PREMIUM]
TIER_LABELS = {
    TIER_DEMO: "Demo (offline)",
    TIER_ECONOMY: "Economy models",
    TIER_STANDARD: "Standard models",
    TIER_PREMIUM: "Premium models",
}


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    price_usd_cents: int  # per month
    monthly_credits: int
    max_agents: int  # per session
    max_rounds: int  # per session, including "continue for N more rounds"
    allowed_flows: frozenset[str] | None  # None = every flow
    max_model_tier: str  # the most expensive tier this plan may use
    concurrent_runs: int  # sessions queued or running at once
    tagline: str
    # Storage quotas per user (issue 9, case 4): what one account may keep, archived items included.
    max_projects: int
    max_sessions: int  # drafts and finished sessions included
    max_reference_chars: int  # text of every stored reference document, summed
    # Conversations (issue 12): how many a user keeps, specialists per conversation (the triage agent is
    # not counted), user messages per minute, and replies streaming at once across all conversations.
    max_conversations: int
    max_specialists: int
    messages_per_minute: int
    concurrent_replies: int
    # Public API (issue 13): requests per minute per API key (or per browser session), and Server-Sent
    # Event streams a key may hold open at once.
    api_requests_per_minute: int
    api_concurrent_streams: int
    # Planned flows (orchestration/flows/planned.py): the largest task graph a planner may return, and how
    # many agent calls of one session run at once, overall and against one provider (the engine's limits).
    max_plan_tasks: int = 0
    max_parallel_calls: int = 2
    max_calls_per_provider: int = 2

    @property
    def rank(self) -> int:
        return PLAN_ORDER.index(self.key)

    @property
    def is_paid(self) -> bool:
        return self.price_usd_cents > 0

    @property
    def price_usd(self) -> int:
        return self.price_usd_cents // 100

    @property
    def lookup_key(self) -> str:
        """The Stripe Price lookup key for this plan's monthly price."""
        return f"atelier_{self.key}_monthly"

    @property
    def product_id(self) -> str:
        return f"atelier_{self.key}"

    def allows_flow(self, flow: str) -> bool:
        return self.allowed_flows is None or flow in self.allowed_flows

    def allows_tier(self, tier: str) -> bool:
        return TIER_ORDER.index(tier) <= TIER_ORDER.index(self.max_model_tier)

    @property
    def model_tiers(self) -> list[str]:
        return [TIER_LABELS[t] for t in TIER_ORDER if self.allows_tier(t)]


PLANS: dict[str, Plan] = {
    FREE: Plan(
        key=FREE,
        name="Free",
        price_usd_cents=0,
        monthly_credits=500,
        max_agents=2,
        max_rounds=6,
        allowed_flows=frozenset({"sequential"}),
        max_model_tier=TIER_ECONOMY,
        concurrent_runs=1,
        tagline="Try the studio with the demo model and low-cost models.",
        max_projects=20,
        max_sessions=100,
        max_reference_chars=10_000_000,
        max_conversations=50,
        max_specialists=3,
        messages_per_minute=6,
        concurrent_replies=1,
        api_requests_per_minute=60,
        api_concurrent_streams=2,
        max_plan_tasks=0,
        max_parallel_calls=2,
        max_calls_per_provider=2,
    ),
    STARTER: Plan(
        key=STARTER,
        name="Starter",
        price_usd_cents=2900,
        monthly_credits=20_000,
        max_agents=5,
        max_rounds=10,
        allowed_flows=None,
        max_model_tier=TIER_STANDARD,
        concurrent_runs=2,
        tagline="Every flow and the mainstream models for regular writing.",
        max_projects=200,
        max_sessions=2_000,
        max_reference_chars=100_000_000,
        max_conversations=1_000,
        max_specialists=5,
        messages_per_minute=20,
        concurrent_replies=2,
        api_requests_per_minute=300,
        api_concurrent_streams=5,
        max_plan_tasks=8,
        max_parallel_calls=4,
        max_calls_per_provider=3,
    ),
    PRO: Plan(
        key=PRO,
        name="Pro",
        price_usd_cents=7900,
        monthly_credits=60_000,
        max_agents=10,
        max_rounds=25,
        allowed_flows=None,
        max_model_tier=TIER_PREMIUM,
        concurrent_runs=5,
        tagline="Large teams, long runs and the premium models.",
        max_projects=1_000,
        max_sessions=10_000,
        max_reference_chars=400_000_000,
        max_conversations=10_000,
        max_specialists=10,
        messages_per_minute=60,
        concurrent_replies=4,
        api_requests_per_minute=1200,
        api_concurrent_streams=20,
        max_plan_tasks=16,
        max_parallel_calls=8,
        max_calls_per_provider=4,
    ),
}
PLAN_ORDER = [FREE, STARTER, PRO]
PLAN_CHOICES = [(p.key, p.name) for p in PLANS.values()]

# Price thresholds (USD per million tokens) that sort the catalogue into tiers.
ECONOMY_MAX_OUTPUT_PRICE = 5
STANDARD_MAX_OUTPUT_PRICE = 20


def get_plan(key: str) -> Plan:
    try:
        return PLANS[key]
    except KeyError:
        raise ValueError(f"Unknown plan {key!r}") from None


def plan_for_lookup_key(lookup_key: str | None) -> Plan | None:
    for plan in PLANS.values():
        if plan.is_paid and plan.lookup_key == lookup_key:
            return plan
    return None


def plan_for_product(product_id: str | None) -> Plan | None:
    """The paid plan whose Stripe Product id (``atelier_<plan>``, created by sync_stripe_plans) this is."""
    for plan in PLANS.values():
        if plan.is_paid and plan.product_id == product_id:
            return plan
    return None


def plan_for_price(price: dict[str, Any] | None = None, *, price_id: str = "", product_id: str = "") -> Plan | None:
    """The paid plan a Stripe Price stands for; None for a price that is not one of ours.

    ``price`` is a Price object (subscription items, older invoice lines); invoice lines of API
    2025-03-31+ carry only ``price_id`` and ``product_id`` (``pricing.price_details``). Mapped by
    the price's lookup key (``atelier_<plan>_monthly``) or its product (``atelier_<plan>``): what
    the customer pays for. Subscription and price metadata are never read: the Customer Portal
    switches prices without touching metadata (issue 9, case 5), and dashboard users can edit it.
    A price that lost its lookup key to a newer price (sync_stripe_plans) still maps by product.
    """
    if isinstance(price, dict):
        product = price.get("product")
        product_id = (product.get("id", "") if isinstance(product, dict) else product) or product_id
        by_key = plan_for_lookup_key(price.get("lookup_key"))
        if by_key is not None:
            return by_key
    return plan_for_product(product_id)


# Invoices that start a subscription period grant the plan's monthly credits. Stripe's billing_reason:
# https://docs.stripe.com/api/invoices/object#invoice_object-billing_reason
PERIOD_BILLING_REASONS = frozenset({"subscription_create", "subscription_cycle"})


def credits_for_invoice(*, plan: Plan, billing_reason: str, amount_paid_cents: int) -> int:
    """Credits a paid subscription invoice grants (docs/billing.md "Credits from invoices").

    - A period invoice (subscription_create, subscription_cycle) with money paid: the plan's
      monthly credits.
    - Any other invoice (subscription_update prorations after a plan switch, manual, threshold):
      credits in proportion to the money paid at the plan's rate,
      ``floor(amount_paid × monthly_credits / monthly price)``, never more than a month's worth.
      A $1.67 proration on Pro ($79, 60,000 credits) grants 1,268.
    - Nothing was paid ($0, a trial, a fully discounted or credit-balance invoice): no credits.
    """
    if amount_paid_cents <= 0 or not plan.is_paid:
        return 0
    if billing_reason in PERIOD_BILLING_REASONS:
        return plan.monthly_credits
    return min(plan.monthly_credits, amount_paid_cents * plan.monthly_credits // plan.price_usd_cents)


def next_plan_up(plan: Plan) -> Plan | None:
    index = PLAN_ORDER.index(plan.key)
    return PLANS[PLAN_ORDER[index + 1]] if index + 1 < len(PLAN_ORDER) else None


def model_tier(model: LLMModel) -> str:
    """The tier of a catalogue model (orchestration.models.LLMModel), from its output price."""
    if model.is_demo:
        return TIER_DEMO
    price = model.output_price_per_mtok
    if price is None:
        return TIER_PREMIUM  # unpriced models cannot run anyway; never let them look cheap
    if price <= ECONOMY_MAX_OUTPUT_PRICE:
        return TIER_ECONOMY
    if price <= STANDARD_MAX_OUTPUT_PRICE:
        return TIER_STANDARD
    return TIER_PREMIUM


def cheapest_plan_for(predicate: Callable[[Plan], bool]) -> Plan | None:
    for key in PLAN_ORDER:
        if predicate(PLANS[key]):
            return PLANS[key]
    return None
