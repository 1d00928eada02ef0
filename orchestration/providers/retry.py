"""Backoff for the engine's single retry layer (the SDKs run with max_retries=0)."""

from __future__ import annotations

import random

BASE_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
# A server may ask for a long pause; we honour it, but not beyond this.
MAX_RETRY_AFTER_SECONDS = 120.0


def retry_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = BASE_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (0 = the first retry): base, 2x base, 4x base... up to cap.

    Exponential backoff with "equal jitter" (half fixed, half random) so concurrent agents that failed
    together do not retry in lock-step; every retry waits longer than the one before (before jitter).
    A Retry-After from the server wins when it asks for longer (honoured up to MAX_RETRY_AFTER_SECONDS).
    """
    rng = rng or random.Random()  # jitter, not security
    exponent = max(0, attempt)
    ceiling = min(cap, base * float(2 ** min(exponent, 30)))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None and retry_after >= 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay
