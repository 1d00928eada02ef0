"""What the caller may use: the model catalogue with prices and plan access, presets, balance and usage."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from ninja import Router, Schema

from api.routes.common import paginate
from api.schemas import ERRORS, Page
from atelier.core.http import AuthenticatedHttpRequest

router = Router(tags=["catalogue and billing"])


class ModelOut(Schema):
    id: int
    ref: str  # "provider:model_id", what agents name
    provider: str
    model_id: str
    display_name: str
    context_window: int
    input_price_per_mtok: str | None  # USD per million tokens
    output_price_per_mtok: str | None
    credit_multiplier: str
    credits_per_1k_in_1k_out: int | None  # what a typical call costs in credits
    reasoning: str
    is_demo: bool
    allowed: bool  # usable on the caller's plan, priced and its provider connected
    reason: str  # why not, in words (never a setting name)
    upgrade_url: str


class PresetOut(Schema):
    id: int
    slug: str
    name: str
    description: str
    flow: str
    shipped: bool
    agents: int
    allowed: bool
    reason: str


class BalanceOut(Schema):
    balance: int
    plan: str
    plan_name: str
    monthly_credits: int
    api_requests_per_minute: int
    api_concurrent_streams: int


class EntryOut(Schema):
    id: int
    kind: str
    amount: int
    balance_after: int
    usage: int
    description: str
    session_id: int | None
    turn_id: int | None
    created_at: datetime


class UsageOut(Page):
    balance: int
    by_session: list[dict[str, Any]]
    by_model: list[dict[str, Any]]
    items: list[EntryOut]


def _price(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@router.get("/models", response={200: list[ModelOut], **ERRORS}, summary="Model catalogue, prices, plan access")
def list_models(request: AuthenticatedHttpRequest) -> list[dict[str, Any]]:
    from billing.pricing import credits_for_usage
    from orchestration.forms import model_options

    rows: list[dict[str, Any]] = []
    for option in model_options(request.user):
        model = option.model
        typical = (
            credits_for_usage(model=model, input_tokens=1000, cached_tokens=0, output_tokens=1000)
            if model.is_priced
            else None
        )
        rows.append(
            {
                "id": model.pk,
                "ref": f"{model.provider}:{model.model_id}",
                "provider": model.provider,
                "model_id": model.model_id,
                "display_name": model.display_name,
                "context_window": model.context_window,
                "input_price_per_mtok": _price(model.input_price_per_mtok),
                "output_price_per_mtok": _price(model.output_price_per_mtok),
                "credit_multiplier": str(model.credit_multiplier),
                "credits_per_1k_in_1k_out": typical,
                "reasoning": model.reasoning or "",
                "is_demo": model.is_demo,
                "allowed": not option.locked,
                "reason": option.reason,
                "upgrade_url": option.upgrade_url,
            }
        )
    return rows


@router.get("/presets", response={200: list[PresetOut], **ERRORS}, summary="Preset teams: shipped and your own")
def list_presets(request: AuthenticatedHttpRequest) -> list[dict[str, Any]]:
    from billing.gating import check
    from orchestration.presets import presets_for

    rows: list[dict[str, Any]] = []
    for preset in presets_for(request.user):
        verdict = check(request.user, "use_flow", flow=preset.flow)
        rows.append(
            {
                "id": preset.pk,
                "slug": preset.slug,
                "name": preset.name,
                "description": preset.description,
                "flow": preset.flow,
                "shipped": preset.owner_id is None,
                "agents": len((preset.data or {}).get("agents", [])),
                "allowed": verdict.allowed,
                "reason": verdict.reason,
            }
        )
    return rows


@router.get("/balance", response={200: BalanceOut, **ERRORS}, summary="Credit balance and plan")
def balance(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    from billing.services import effective_plan, get_account

    account = get_account(request.user)
    plan = effective_plan(account)
    return {
        "balance": account.balance,
        "plan": plan.key,
        "plan_name": plan.name,
        "monthly_credits": plan.monthly_credits,
        "api_requests_per_minute": plan.api_requests_per_minute,
        "api_concurrent_streams": plan.api_concurrent_streams,
    }


@router.get("/usage", response={200: UsageOut, **ERRORS}, summary="Credit usage and the ledger, newest first")
def usage(request: AuthenticatedHttpRequest, limit: int = 25, offset: int = 0) -> dict[str, Any]:
    """``by_session`` and ``by_model``: the billing page's tables (top 20 by credits); ``items``: ledger
    lines (reservations, settlements, releases, grants, purchases), paginated."""
    from billing import usage as usage_queries
    from billing.models import CreditEntry
    from billing.services import get_account

    page = paginate(CreditEntry.objects.filter(user=request.user), limit=limit, offset=offset)
    by_session = [{k: v for k, v in row.items() if k != "url"} for row in usage_queries.by_session(request.user)]
    for row in by_session:
        row["cost_usd"] = str(row.get("cost_usd", ""))
    by_model = [
        {k: (str(v) if k.startswith("cost") else v) for k, v in row.items()}
        for row in usage_queries.by_model(request.user)
    ]
    return {**page, "balance": get_account(request.user).balance, "by_session": by_session, "by_model": by_model}
