"""Read-side usage queries over the credit ledger and the turns: what the billing page and the API show.

Every query is scoped to the user; credits come from settlements (what was charged), provider cost from
the turns. Amounts: credits are integers, costs are Decimal US dollars.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Sum
from django.urls import reverse

from billing.models import CreditEntry, EntryKind

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def by_session(user: User) -> list[dict[str, Any]]:
    """Credits per session from the ledger (settlements), with calls and provider cost from the turns.

    Rows: {"session_id", "title", "url", "credits", "calls", "cost_usd"}; most credits first, top 20.
    """
    from orchestration.models import Turn, WritingSession

    rows = list(
        CreditEntry.objects.filter(user=user, kind=EntryKind.SETTLEMENT, session_id__isnull=False)
        .values("session_id")
        .annotate(credits=Sum("usage"), calls=Count("pk"))
        .order_by("-credits", "-session_id")[:20]
    )
    ids = [r["session_id"] for r in rows if r["session_id"] is not None]  # never None: filtered above
    # Scoped to the owner: a session id in someone's ledger never reveals another user's title.
    titles = dict(WritingSession.objects.filter(project__owner=user, pk__in=ids).values_list("pk", "title"))
    costs = dict(
        Turn.objects.filter(session__project__owner=user, session_id__in=ids)
        .values("session_id")
        .annotate(cost=Sum("provider_cost"))
        .values_list("session_id", "cost")
    )
    usage: list[dict[str, Any]] = []
    for row in rows:
        session_id = row["session_id"]
        if session_id is None:  # filtered above; narrows the type
            continue
        usage.append(
            {
                **row,
                "title": titles.get(session_id, f"Session #{session_id} (deleted)"),
                "url": reverse("session_detail", args=[session_id]) if session_id in titles else "",
                "cost_usd": costs.get(session_id) or Decimal(0),
            }
        )
    return usage


def _by_turn_field(user: User, field: str, label: str) -> list[dict[str, Any]]:
    """Credits, calls and provider cost of the user's settled turns grouped by `field` (agent or model)."""
    from orchestration.models import Turn

    settled = CreditEntry.objects.filter(user=user, kind=EntryKind.SETTLEMENT, turn_id__isnull=False)
    per_turn = dict(settled.values_list("turn_id", "usage"))
    groups: dict[str, dict[str, Any]] = {}
    turns = Turn.objects.filter(session__project__owner=user, pk__in=list(per_turn)).values_list(
        "pk", field, "provider_cost"
    )
    for turn_id, key, cost in turns:
        name = key or f"Unknown {label}"
        row = groups.setdefault(name, {"name": name, "credits": 0, "calls": 0, "cost_usd": Decimal(0)})
        row["credits"] += per_turn[turn_id]
        row["calls"] += 1
        row["cost_usd"] += cost or Decimal(0)
    return sorted(groups.values(), key=lambda r: (-r["credits"], r["name"]))


def by_model(user: User) -> list[dict[str, Any]]:
    """Credits, calls and provider cost (USD) per model, most credits first: rows {name, credits, calls, cost_usd}."""
    return _by_turn_field(user, "model_used", "model")


def by_agent(user: User) -> list[dict[str, Any]]:
    """Credits, calls and provider cost (USD) per agent name, most credits first.

    Rows: {name, credits, calls, cost_usd}.
    """
    return _by_turn_field(user, "agent_name", "agent")
