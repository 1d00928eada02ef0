from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from atelier.core.http import AuthenticatedHttpRequest
from billing import services, stripe_api, usage
from billing.models import CreditAccount, CreditEntry, EntryKind, PlanStatus
from billing.plans import PLAN_ORDER, PLANS, TIER_LABELS

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

CHART_DAYS = 30
CHART_WIDTH = 600
CHART_HEIGHT = 120


def _plan_rows(current_key: str | None) -> list[dict[str, Any]]:
    current_rank = PLAN_ORDER.index(current_key) if current_key else -1
    return [
        {
            "plan": plan,
            "is_current": plan.key == current_key,
            "is_upgrade": plan.is_paid and PLAN_ORDER.index(plan.key) > current_rank,
            "flows": "All flows" if plan.allowed_flows is None else ", ".join(sorted(plan.allowed_flows)).title(),
            "models": ", ".join(plan.model_tiers),
        }
        for plan in PLANS.values()
    ]


@require_GET
def pricing_page(request: HttpRequest) -> HttpResponse:
    account = services.get_account(request.user) if request.user.is_authenticated else None
    return render(
        request,
        "billing/pricing.html",
        {
            "plans": _plan_rows(account.plan if account else None),
            "account": account,
            "tier_labels": TIER_LABELS,
            "reason": request.GET.get("reason", "")[:300],
        },
    )


def _usage_chart(user: User) -> dict[str, Any]:
    today = timezone.localdate()
    start = today - dt.timedelta(days=CHART_DAYS - 1)
    rows = dict(
        CreditEntry.objects.filter(user=user, kind=EntryKind.SETTLEMENT, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(total=Sum("usage"))
        .values_list("day", "total")
    )
    days = [start + dt.timedelta(days=i) for i in range(CHART_DAYS)]
    peak = max([rows.get(d) or 0 for d in days] + [1])
    slot = CHART_WIDTH / CHART_DAYS
    bars = []
    for i, day in enumerate(days):
        value = rows.get(day) or 0
        height = round(value / peak * (CHART_HEIGHT - 4), 1) if value else 0
        bars.append(
            {
                "x": round(i * slot + 1, 1),
                "y": CHART_HEIGHT - height,
                "width": round(slot - 2, 1),
                "height": height,
                "day": day,
                "value": value,
            }
        )
    return {
        "bars": bars,
        "peak": peak,
        "total": sum(b["value"] for b in bars),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "start": start,
        "end": today,
    }


def explain_entry(entry: CreditEntry) -> str:
    """What a ledger line means in words, so a settlement's "+2" does not read like a refund."""
    if entry.kind == EntryKind.RESERVATION:
        return f"Held {-entry.amount} credits before a model call: the most it could cost. The unused part comes back."
    if entry.kind == EntryKind.SETTLEMENT:
        if entry.amount > 0:
            return f"The call used {entry.usage} credits; the other {entry.amount} held credits came back."
        if entry.amount < 0:
            return f"The call used {entry.usage} credits, {-entry.amount} more than were held."
        return f"The call used exactly the {entry.usage} credits held."
    if entry.kind == EntryKind.RELEASE:
        return f"The call did not finish: all {entry.amount} held credits came back."
    return ""


def _invoices(account: CreditAccount) -> list[Any]:
    if not account.stripe_customer_id:
        return []
    from djstripe.models import Invoice

    return list(Invoice.objects.filter(customer_id=account.stripe_customer_id).order_by("-created")[:12])


@login_required
@require_GET
def billing_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    account = services.get_account(request.user)
    plan = services.effective_plan(account)
    checkout = request.GET.get("checkout", "")
    return render(
        request,
        "billing/billing.html",
        {
            "account": account,
            "plan": plan,
            "pending_plan": PLANS.get(account.pending_plan),
            "in_grace": account.plan_status == PlanStatus.GRACE,
            "out_of_credits": account.balance <= 0 or request.GET.get("reason") == "out_of_credits",
            "checkout": checkout if checkout in {"success", "cancelled"} else "",
            "plans": _plan_rows(account.plan),
            "chart": _usage_chart(request.user),
            "by_session": usage.by_session(request.user),
            "by_model": usage.by_model(request.user),
            "by_agent": usage.by_agent(request.user),
            "entries": [(entry, explain_entry(entry)) for entry in CreditEntry.objects.filter(user=request.user)[:25]],
            "invoices": _invoices(account),
            "purchases": CreditEntry.objects.filter(user=request.user, kind=EntryKind.PURCHASE)[:12],
        },
    )


@login_required
@require_POST
def checkout_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    plan = PLANS.get(request.POST.get("plan", ""))
    if plan is None or not plan.is_paid:
        return HttpResponseBadRequest("Choose Starter or Pro.")
    account = services.get_account(request.user)
    if account.stripe_subscription_id and account.plan != "free":
        # An existing subscription changes plan in the Customer Portal (proration, no second subscription).
        return portal_view(request)
    billing_url = request.build_absolute_uri(reverse("billing"))
    try:
        url = stripe_api.create_checkout_session(
            user=request.user,
            plan=plan,
            success_url=f"{billing_url}?checkout=success",
            cancel_url=f"{billing_url}?checkout=cancelled",
        )
    except (stripe.StripeError, stripe_api.StripeNotConfigured) as error:
        logger.warning("Checkout failed for user %s: %s", request.user.pk, error)
        messages.error(request, "Payments are not available right now. Please try again later.")
        return redirect("billing")
    return redirect(url)


@login_required
@require_POST
def portal_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    try:
        url = stripe_api.create_portal_session(
            user=request.user, return_url=request.build_absolute_uri(reverse("billing"))
        )
    except stripe.StripeError as error:
        logger.warning("Portal failed for user %s: %s", request.user.pk, error)
        messages.error(request, "The billing portal is not available right now. Please try again later.")
        return redirect("billing")
    return redirect(url)
