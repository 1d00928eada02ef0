"""The staff analytics page (/admin/analytics/): what the operator console shows about use and money.

Every figure is read from the tables that own it, for the last N days (7, 30 or 90; `?days=`), in the
server's time zone:
- sign-ups (users' date_joined) and active users (distinct owners of turns that started that day);
- sessions started / completed / failed (WritingSession.started_at, and finished_at with the status);
- tokens (turns: input + cached + output), credits (ledger settlements' usage) and provider cost (turns,
  USD) per day, and per model;
- top users by credits; failure reasons (failed sessions' stop detail, failed turns' errors);
- revenue by plan from dj-stripe's paid invoices (amount_paid, cents -> currency units).
Charts are server-rendered SVG bars, like the billing page's (no JavaScript, CSP-safe).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Aggregate, Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.models import CreditEntry, EntryKind

PERIODS = (7, 30, 90)
CHART_WIDTH = 600
CHART_HEIGHT = 100
TOP = 10


def _days(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(count)]


def bar_chart(days: list[dt.date], values: dict[dt.date, float], *, unit: str) -> dict[str, Any]:
    """SVG bar geometry for one daily series: {"bars": [{x, y, width, height, day, value}], "total", "peak"}."""
    peak = max([float(values.get(d) or 0) for d in days] + [0])
    slot = CHART_WIDTH / max(1, len(days))
    bars = []
    for i, day in enumerate(days):
        value = values.get(day) or 0
        height = round(float(value) / peak * (CHART_HEIGHT - 4), 1) if value and peak else 0
        bars.append(
            {
                "x": round(i * slot + 0.5, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(max(1.0, slot - 1), 1),
                "height": height,
                "day": day,
                "value": value,
            }
        )
    return {
        "bars": bars,
        "total": sum((values.get(d) or 0) for d in days),
        "peak": peak,
        "unit": unit,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
    }


def _per_day(queryset: QuerySet[Any], date_field: str, value: Aggregate | None = None) -> dict[dt.date, float]:
    rows = queryset.annotate(day=TruncDate(date_field)).values("day")
    rows = rows.annotate(value=value if value is not None else Count("pk"))
    return {row["day"]: row["value"] or 0 for row in rows}


def _revenue_by_plan(start: dt.datetime) -> list[dict[str, Any]]:
    """Paid invoices since `start`, grouped by plan (the webhooks' rule, from dj-stripe's stored data)."""
    from djstripe.models import Invoice

    from billing.webhooks import invoice_plan

    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    counts: Counter[tuple[str, str]] = Counter()
    for data in Invoice.objects.filter(created__gte=start).values_list("stripe_data", flat=True):
        data = data or {}
        if data.get("status") != "paid":
            continue
        plan = invoice_plan(data)  # the webhooks' own rule: the plan of the largest positive line
        plan_name = plan.name if plan is not None else "Unknown plan"
        currency = str(data.get("currency") or "usd").upper()
        totals[(plan_name, currency)] += Decimal(int(data.get("amount_paid") or 0)) / 100
        counts[(plan_name, currency)] += 1
    return [
        {"plan": plan, "currency": currency, "amount": amount, "invoices": counts[(plan, currency)]}
        for (plan, currency), amount in sorted(totals.items(), key=lambda item: -item[1])
    ]


def analytics_context(days: int) -> dict[str, Any]:
    """Everything the page shows for the last `days` days (see the module docstring for the sources)."""
    from orchestration.models import Status, Turn, WritingSession

    today = timezone.localdate()
    start_day = today - dt.timedelta(days=days - 1)
    start = timezone.make_aware(dt.datetime.combine(start_day, dt.time.min))
    day_list = _days(start_day, days)
    turns = Turn.objects.filter(started_at__gte=start, kind=Turn.Kind.AGENT)
    settled = CreditEntry.objects.filter(kind=EntryKind.SETTLEMENT, created_at__gte=start)
    sessions = WritingSession.objects.all()

    charts = _charts(day_list, start, turns=turns, settled=settled, sessions=sessions)
    per_model = _per_model(turns, settled)
    top_users = list(
        settled.values("user_id", "user__email")
        .annotate(credits=Sum("usage"), calls=Count("pk"))
        .order_by("-credits", "user_id")[:TOP]
    )
    failures = Counter(
        (detail or "No reason recorded").strip()[:160]
        for detail in sessions.filter(status=Status.FAILED, finished_at__gte=start).values_list(
            "stop_detail", flat=True
        )
    )
    turn_errors = Counter(
        (error or "").strip().splitlines()[0][:160]
        for error in turns.filter(status=Turn.TurnStatus.FAILED).exclude(error="").values_list("error", flat=True)
    )
    return {
        "days": days,
        "periods": PERIODS,
        "start": start_day,
        "end": today,
        "charts": charts,
        "per_model": per_model,
        "top_users": top_users,
        "session_failures": failures.most_common(TOP),
        "turn_errors": turn_errors.most_common(TOP),
        "revenue": _revenue_by_plan(start),
    }


def _charts(
    day_list: list[dt.date],
    start: dt.datetime,
    *,
    turns: QuerySet[Any],
    settled: QuerySet[Any],
    sessions: QuerySet[Any],
) -> list[tuple[str, dict[str, Any]]]:
    """The page's daily charts as (title, bar chart) pairs, oldest day first: users, sessions, tokens, money.

    `turns`: agent turns started since `start`; `settled`: settlement entries since `start`; `sessions`: all.
    """
    from orchestration.models import Status

    users = get_user_model().objects.all()
    active = defaultdict(set)
    for day, owner in (
        turns.annotate(day=TruncDate("started_at")).values_list("day", "session__project__owner_id").distinct()
    ):
        active[day].add(owner)
    finished = sessions.filter(finished_at__gte=start)
    all_tokens = Sum(F("input_tokens") + F("cached_tokens") + F("output_tokens"))
    return [
        ("Sign-ups", bar_chart(day_list, _per_day(users.filter(date_joined__gte=start), "date_joined"), unit="users")),
        ("Active users", bar_chart(day_list, {d: len(o) for d, o in active.items()}, unit="users")),
        (
            "Sessions started",
            bar_chart(day_list, _per_day(sessions.filter(started_at__gte=start), "started_at"), unit="sessions"),
        ),
        (
            "Sessions completed",
            bar_chart(day_list, _per_day(finished.filter(status=Status.COMPLETED), "finished_at"), unit="sessions"),
        ),
        (
            "Sessions failed",
            bar_chart(day_list, _per_day(finished.filter(status=Status.FAILED), "finished_at"), unit="sessions"),
        ),
        ("Tokens", bar_chart(day_list, _per_day(turns, "started_at", all_tokens), unit="tokens")),
        ("Credits charged", bar_chart(day_list, _per_day(settled, "created_at", Sum("usage")), unit="credits")),
        ("Provider cost", bar_chart(day_list, _per_day(turns, "started_at", Sum("provider_cost")), unit="USD")),
    ]


def _per_model(turns: QuerySet[Any], settled: QuerySet[Any]) -> list[dict[str, Any]]:
    """Per model used: calls, tokens, credits charged and provider cost (USD), most credits first."""
    credits_by_turn = dict(settled.exclude(turn_id__isnull=True).values_list("turn_id", "usage"))
    per_model: dict[str, dict[str, Any]] = {}
    for turn_id, model, tokens, cost in turns.values_list(
        "pk", "model_used", F("input_tokens") + F("cached_tokens") + F("output_tokens"), "provider_cost"
    ):
        row = per_model.setdefault(
            model or "Unknown model",
            {"model": model or "Unknown model", "calls": 0, "tokens": 0, "credits": 0, "cost": Decimal(0)},
        )
        row["calls"] += 1
        row["tokens"] += tokens or 0
        row["credits"] += credits_by_turn.get(turn_id, 0)
        row["cost"] += cost or Decimal(0)
    return sorted(per_model.values(), key=lambda r: (-r["credits"], r["model"]))


def analytics_view(request: HttpRequest) -> HttpResponse:
    """Staff only (wrapped by AdminSite.admin_view): the analytics page of the operator console."""
    from django.contrib import admin

    try:
        days = int(request.GET.get("days", "30"))
    except ValueError:
        days = 30
    if days not in PERIODS:
        days = 30
    context = {
        **admin.site.each_context(request),
        "title": "Analytics",
        **analytics_context(days),
    }
    return TemplateResponse(request, "admin/analytics.html", context)
