"""Metrics for operators, in the Prometheus text format at /metrics (docs/operations.md, "Metrics").

Two kinds, so that no turn pays a database query for them:

* **Events counted where they happen** (prometheus_client): turns finished, tokens, credits charged,
  provider latency and time to first token, provider errors — by provider and model — and open WebSocket
  connections. The engine runs in django-q2 worker processes and the WebSockets in web processes, so the
  counters live in prometheus_client's multiprocess mode: every process of a machine writes to
  PROMETHEUS_MULTIPROC_DIR (settings: var/metrics by default) and a scrape sums them. Turn counters are
  incremented on commit, so a rolled-back turn is never counted.
* **State read at scrape time** from the database and the broker (`StateCollector`): active sessions by
  status and the task queue depth. Two cheap queries per scrape, none per turn.

Metric names (all prefixed `atelier_`): turns_total{provider,model,status}, tokens_total{provider,model,kind},
credits_charged_total{provider,model,purpose}, provider_latency_seconds{provider,model} (histogram),
provider_first_token_seconds{provider,model} (histogram), provider_errors_total{provider,model,kind},
websocket_connections, active_sessions{status}, queue_depth.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from orchestration.providers import Usage

logger = logging.getLogger(__name__)

PROVIDER_MODEL = ["provider", "model"]

TURNS = Counter("atelier_turns", "Turns that ended, by provider, model and turn status.", [*PROVIDER_MODEL, "status"])
TOKENS = Counter(
    "atelier_tokens",
    "Tokens of finished calls by provider, model and kind (input, cached_input, output, reasoning).",
    [*PROVIDER_MODEL, "kind"],
)
CREDITS = Counter(
    "atelier_credits_charged",
    "Credits charged for model calls, by provider, model and purpose (turn, team_suggestion).",
    [*PROVIDER_MODEL, "purpose"],
)
LATENCY = Histogram(
    "atelier_provider_latency_seconds",
    "Wall time of a completed provider call, by provider and model.",
    PROVIDER_MODEL,
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
FIRST_TOKEN = Histogram(
    "atelier_provider_first_token_seconds",
    "Time to the first token of a completed provider call, by provider and model.",
    PROVIDER_MODEL,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PROVIDER_ERRORS = Counter(
    "atelier_provider_errors",
    "Failed provider calls (each attempt), by provider, model and error kind (rate_limit, server, timeout...).",
    [*PROVIDER_MODEL, "kind"],
)
WEBSOCKETS = Gauge(
    "atelier_websocket_connections", "Open WebSocket connections to live pages.", multiprocess_mode="livesum"
)


def turn_finished(
    *,
    provider: str,
    model: str,
    status: str,
    usage: Usage | None = None,
    credits: int = 0,
    latency_ms: int | None = None,
    ttft_ms: int | None = None,
    purpose: str = "turn",
) -> None:
    """Count one ended call. `usage`: orchestration.providers.Usage or None; times in milliseconds."""
    try:
        if status:
            TURNS.labels(provider, model, status).inc()
        if usage is not None:
            for kind, value in (
                ("input", usage.input_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("output", usage.output_tokens),
                ("reasoning", usage.reasoning_tokens),
            ):
                if value:
                    TOKENS.labels(provider, model, kind).inc(value)
        if credits:
            CREDITS.labels(provider, model, purpose).inc(credits)
        if latency_ms is not None:
            LATENCY.labels(provider, model).observe(latency_ms / 1000)
        if ttft_ms is not None:
            FIRST_TOKEN.labels(provider, model).observe(ttft_ms / 1000)
    except Exception:  # metrics must never break a turn
        logger.exception("metrics: could not count a finished call")


def provider_error(*, provider: str, model: str, kind: str) -> None:
    """Count one failed provider attempt."""
    try:
        PROVIDER_ERRORS.labels(provider, model, kind).inc()
    except Exception:
        logger.exception("metrics: could not count a provider error")


class StateCollector(Collector):
    """Gauges read at scrape time: active sessions by status, and the task queue depth."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count

        from orchestration.models import ACTIVE_STATUSES, WritingSession

        sessions = GaugeMetricFamily(
            "atelier_active_sessions", "Sessions queued, running, pausing or stopping, by status.", labels=["status"]
        )
        counts = dict(
            WritingSession.objects.filter(status__in=ACTIVE_STATUSES)
            .values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        for status in sorted(ACTIVE_STATUSES):
            sessions.add_metric([str(status)], counts.get(status, 0))
        yield sessions
        depth = queue_depth()
        if depth is not None:
            yield GaugeMetricFamily("atelier_queue_depth", "Tasks waiting in the django-q2 broker.", value=depth)

    def describe(self) -> list[Metric]:
        return []


def queue_depth() -> int | None:
    """Tasks waiting in the django-q2 broker (ORM or Redis), or None when the broker cannot be asked."""
    try:
        from django_q.brokers import get_broker

        return int(get_broker().queue_size())
    except Exception:  # noqa: BLE001 - a broker outage is a missing series (alert on absent()), not a failed scrape
        logger.warning("metrics: the task broker did not answer the queue size")
        return None


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def render() -> bytes:
    """Every metric of this machine's processes, in the Prometheus text format."""
    from prometheus_client import REGISTRY, multiprocess

    state = CollectorRegistry()
    state.register(StateCollector())
    if not multiprocess_dir():
        return generate_latest(REGISTRY) + generate_latest(state)
    _forget_dead_processes()
    events = CollectorRegistry()
    multiprocess.MultiProcessCollector(events)
    return generate_latest(events) + generate_latest(state)


def _forget_dead_processes() -> None:
    """A process that died without closing its WebSockets would keep counting them: drop its live gauges.
    (Processes of one machine share the directory and the pid namespace; see docs/operations.md.)"""
    for path in Path(multiprocess_dir()).glob("gauge_livesum_*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            mark_process_dead(pid)
        except PermissionError:
            continue  # alive, another user's process


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (WebSocket connections) from the multiprocess directory."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def clear_multiprocess_dir() -> int:
    """Delete every process's metric files (`manage.py up` does it before starting its processes: nothing
    else of this app runs then, so counters start from zero as Prometheus expects after a restart).
    Returns how many files were removed."""
    removed = 0
    if multiprocess_dir():
        for path in Path(multiprocess_dir()).glob("*.db"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
