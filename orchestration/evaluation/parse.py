"""The entry points: `parse_evaluation` (an evaluation's text) and `parse_reply` (a whole reply)."""

from __future__ import annotations

import logging
import unicodedata

from orchestration.evaluation.feedback import _prose_feedback
from orchestration.evaluation.json_tier import _parse_json_tier
from orchestration.evaluation.reply import split_output
from orchestration.evaluation.result import MAX_FEEDBACK_CHARS, MAX_PARSE_CHARS, Evaluation
from orchestration.evaluation.scores import _Criteria, _weighted_overall
from orchestration.evaluation.text_tiers import _parse_fallback_tier, _parse_natural_tier

logger = logging.getLogger("orchestration.evaluation")  # the name it had before the split


def parse_evaluation(text: str, criteria: list[tuple[str, float]]) -> Evaluation:
    """Scores (0-10) per criterion, the weighted overall, the tier that found them. Never raises."""
    try:
        return _parse_evaluation(text, criteria)
    except Exception:  # untrusted model output: a parser bug must not fail the turn
        logger.exception("parse_evaluation failed")
        raw = text if isinstance(text, str) else ""
        return Evaluation(scores={}, overall=None, tier="none", feedback="", raw=raw)


def _parse_evaluation(text: str, criteria: list[tuple[str, float]]) -> Evaluation:
    if not isinstance(text, str):
        return Evaluation(raw="")
    raw = text
    # Full-width digits, colons and slashes ("８／１０", "："): read as their ASCII forms.
    text = unicodedata.normalize("NFKC", text[-MAX_PARSE_CHARS:])
    crits = _Criteria(criteria)

    def result(scores: dict[str, float], overall: float | None, tier: str, feedback: str) -> Evaluation:
        computed = _weighted_overall(scores, crits)
        return Evaluation(
            scores=scores,
            overall=computed if computed is not None else overall,
            tier=tier,
            feedback=feedback.strip()[:MAX_FEEDBACK_CHARS],
            raw=raw,
        )

    parsed = _parse_json_tier(text, crits)
    if parsed is not None:
        scores, overall, feedback = parsed
        return result(scores, overall, "json", feedback)

    natural = _parse_natural_tier(text, crits)
    if natural is not None:
        scores, overall, used_lines = natural
        return result(scores, overall, "natural", _prose_feedback(text, crits, used_lines))

    fallback = _parse_fallback_tier(text, crits)
    if fallback:
        return result(fallback, None, "fallback", _prose_feedback(text, crits))

    return result({}, None, "none", _prose_feedback(text, crits))


def parse_reply(text: str, criteria: list[tuple[str, float]]) -> tuple[str, Evaluation]:
    """Split a whole reply and parse its evaluation: (document, evaluation). Never raises.

    Without a recognisable evaluation section only the JSON and natural-language tiers are tried on the
    whole reply: bare numbers inside a document say nothing about its quality.
    """
    document, evaluation_text = split_output(text)
    if evaluation_text:
        return document, parse_evaluation(evaluation_text, criteria)
    evaluation = parse_evaluation(text if isinstance(text, str) else "", criteria)
    if evaluation.tier in ("fallback", "none"):
        raw = text if isinstance(text, str) else ""
        return document, Evaluation(scores={}, overall=None, tier="none", feedback="", raw=raw)
    # Scores found inside the document itself: the document's prose is never the next agent's feedback
    # (the next prompt carries the document already).
    evaluation.feedback = ""
    return document, evaluation
