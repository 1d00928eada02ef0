"""The router: which candidate model runs a task, from the product's own turn history.

Each candidate gets a weighted score of three measured numbers over a recent window of turns
(``WINDOW_DAYS``, at most ``WINDOW_TURNS`` turns per model, every session of the product):

* **success**: the share of its calls that ended well: completed (not failed, broken off, cut off or
  refused) and, for planned tasks, passing the cheap rule checks (non-empty, long enough). A call
  the user stopped counts neither way.
* **latency**: the median seconds per completed call.
* **cost**: the measured provider cost in USD per 1,000 output tokens.

Latency and cost are scaled against the slowest and dearest candidate (0 = worst, 1 = best); the kind of
task sets the weights (research weighs success most; edits and summaries weigh cost more). A model with
fewer than ``MIN_SAMPLES`` turns in the window is scored from the catalogue instead (cold start): a
success prior of ``PRIOR_SUCCESS``, the catalogue's token prices for cost and the median latency of the
measured candidates (or ``PRIOR_LATENCY_S``). Ties keep the builder's order. Pure reads: no writes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from orchestration.models import LLMModel, Turn

# One finished turn: (model_used, status, latency_ms, provider_cost, output_tokens, recipe, result).
_Row = tuple[str, str, int | None, Decimal | None, int, str, Any]

WINDOW_DAYS = 14
WINDOW_TURNS = 200
MIN_SAMPLES = 5
PRIOR_SUCCESS = 0.9
PRIOR_LATENCY_S = 10.0

# (success, latency, cost) weights per task kind; they sum to 1.
WEIGHTS: dict[str, tuple[float, float, float]] = {
    "research": (0.6, 0.15, 0.25),
    "outline": (0.5, 0.3, 0.2),
    "section": (0.5, 0.2, 0.3),
    "edit": (0.4, 0.2, 0.4),
    "summary": (0.4, 0.2, 0.4),
    "other": (0.5, 0.2, 0.3),
}
_GOOD = {Turn.TurnStatus.COMPLETED}
_BAD = {Turn.TurnStatus.FAILED, Turn.TurnStatus.INCOMPLETE, Turn.TurnStatus.TRUNCATED, Turn.TurnStatus.REFUSED}


@dataclass(frozen=True)
class Telemetry:
    """One model's numbers over the window. `samples` counts calls that ended well or badly."""

    model_id: str
    samples: int
    success_rate: float | None
    median_latency_s: float | None
    usd_per_1k_output: float | None
    failures: int = 0


@dataclass(frozen=True)
class Scored:
    model: LLMModel
    agent_id: int
    score: float
    success: float
    latency_s: float
    cost: float  # USD per 1,000 output tokens
    samples: int
    source: str  # "history" or "catalogue"

    def as_reason(self) -> dict[str, Any]:
        return {
            "model": self.model.display_name,
            "model_pk": self.model.pk,
            "score": round(self.score, 3),
            "success": round(self.success, 3),
            "latency_s": round(self.latency_s, 2),
            "usd_per_1k_output": round(self.cost, 5),
            "samples": self.samples,
            "source": self.source,
        }


def telemetry(model_ids: list[str] | None = None, *, now: datetime | None = None) -> dict[str, Telemetry]:
    """Per-model numbers (keyed by the provider's model id) over the recent window, in one query."""
    since = (now or timezone.now()) - timedelta(days=WINDOW_DAYS)
    rows = Turn.objects.filter(kind=Turn.Kind.AGENT, finished_at__gte=since).exclude(model_used="")
    if model_ids is not None:
        rows = rows.filter(model_used__in=model_ids)
    per: dict[str, list[_Row]] = {}
    for row in rows.order_by("-pk").values_list(
        "model_used", "status", "latency_ms", "provider_cost", "output_tokens", "recipe", "result"
    )[: WINDOW_TURNS * max(1, len(model_ids or [])) * 2]:
        bucket = per.setdefault(row[0], [])
        if len(bucket) < WINDOW_TURNS:
            bucket.append(row)
    return {model_id: _summarise(model_id, rows) for model_id, rows in per.items()}


def _summarise(model_id: str, rows: list[_Row]) -> Telemetry:
    good = bad = 0
    latencies: list[float] = []
    cost, tokens = Decimal("0"), 0
    for _, status, latency_ms, provider_cost, output_tokens, recipe, result in rows:
        checks_failed = recipe == "task" and isinstance(result, dict) and result.get("checks_ok") is False
        if status in _GOOD and not checks_failed:
            good += 1
        elif status in _BAD or checks_failed:
            bad += 1
        if status in _GOOD and latency_ms is not None:
            latencies.append(latency_ms / 1000)
        if status in _GOOD:
            cost += provider_cost or 0
            tokens += output_tokens or 0
    samples = good + bad
    return Telemetry(
        model_id=model_id,
        samples=samples,
        success_rate=good / samples if samples else None,
        median_latency_s=statistics.median(latencies) if latencies else None,
        usd_per_1k_output=float(cost) * 1000 / tokens if tokens else None,
        failures=bad,
    )


def catalogue_cost(model: LLMModel) -> float:
    """USD per 1,000 output tokens at list price, with an equal number of input tokens (cold start)."""
    if not model.is_priced:
        return 0.0
    return float((model.input_price_per_mtok or 0) + (model.output_price_per_mtok or 0)) / 1000


def rank(candidates: list[tuple[int, LLMModel]], kind: str, *, now: datetime | None = None) -> list[Scored]:
    """Candidates [(agent id, model)] best first, each with its score and the numbers behind it."""
    unique: list[tuple[int, LLMModel]] = []
    for agent_id, model in candidates:
        if all(model.pk != m.pk for _, m in unique):
            unique.append((agent_id, model))
    stats = telemetry([m.model_id for _, m in unique], now=now)
    measured = {m.pk: stats.get(m.model_id) for _, m in unique}
    warm = [t for t in measured.values() if t is not None and t.samples >= MIN_SAMPLES]
    latencies = [t.median_latency_s for t in warm if t.median_latency_s is not None]
    prior_latency = statistics.median(latencies) if latencies else PRIOR_LATENCY_S
    rows = []
    for agent_id, model in unique:
        t = measured[model.pk]
        if t is not None and t.samples >= MIN_SAMPLES:
            success = t.success_rate or 0.0
            latency = t.median_latency_s if t.median_latency_s is not None else prior_latency
            cost = t.usd_per_1k_output if t.usd_per_1k_output is not None else catalogue_cost(model)
            rows.append((agent_id, model, success, latency, cost, t.samples, "history"))
        else:
            samples = t.samples if t else 0
            rows.append((agent_id, model, PRIOR_SUCCESS, prior_latency, catalogue_cost(model), samples, "catalogue"))
    w_success, w_latency, w_cost = WEIGHTS.get(kind, WEIGHTS["other"])
    slowest = max((r[3] for r in rows), default=0.0) or 1.0
    dearest = max((r[4] for r in rows), default=0.0) or 1.0
    scored = [
        Scored(
            model=model,
            agent_id=agent_id,
            score=w_success * success + w_latency * (1 - latency / slowest) + w_cost * (1 - cost / dearest),
            success=success,
            latency_s=latency,
            cost=cost,
            samples=samples,
            source=source,
        )
        for agent_id, model, success, latency, cost, samples, source in rows
    ]
    order = {id(s): i for i, s in enumerate(scored)}
    return sorted(scored, key=lambda s: (-round(s.score, 9), order[id(s)]))


def decision(task_id: str, kind: str, ranked: list[Scored], chosen: Scored, why: str) -> dict[str, Any]:
    """The journal entry of one routing decision: what was chosen, why, and every candidate's scores."""
    weights = WEIGHTS.get(kind, WEIGHTS["other"])
    return {
        "task": task_id,
        "kind": kind,
        "chosen": chosen.model.display_name,
        "chosen_pk": chosen.model.pk,
        "why": why,
        "weights": {"success": weights[0], "latency": weights[1], "cost": weights[2]},
        "candidates": [s.as_reason() for s in ranked],
    }
