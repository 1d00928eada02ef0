"""What parsing an evaluation returns, and the limits that bound it."""

from __future__ import annotations

from dataclasses import dataclass, field

TIERS = ("json", "natural", "fallback", "none")

# Model output can be huge (a runaway stream); the evaluation sits at the end, so keep the tail.
MAX_PARSE_CHARS = 60_000
MAX_FEEDBACK_CHARS = 4_000


@dataclass
class Evaluation:
    scores: dict[str, float] = field(default_factory=dict)
    overall: float | None = None
    tier: str = "none"
    feedback: str = ""
    raw: str = ""
