"""Criteria names and score numbers: matching a label to a criterion, reading `8/10`, `80%`, `4 out of 5`
as 0-10, and the weighted overall."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any


def _norm_key(name: str) -> str:
    # Any script: "Clarté", "Klarheit", "明晰さ" are names too (NFKC folds full-width forms).
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", str(name)).casefold())


def _is_cjk(ch: str) -> bool:
    """Scripts written without spaces: a name there has no word boundary after it ("明晰さは8点")."""
    return ord(ch) >= 0x2E80


_KEY_SUFFIXES = ("score", "rating", "points", "grade")


def _key_variants(key: str) -> set[str]:
    norm = _norm_key(key)
    variants = {norm}
    for suffix in _KEY_SUFFIXES:
        if norm.endswith(suffix) and len(norm) > len(suffix):
            variants.add(norm[: -len(suffix)])
    return variants


OVERALL_KEYS = {
    "overall",
    "overallscore",
    "overallrating",
    "total",
    "totalscore",
    "weightedoverall",
    "weightedscore",
    "weightedtotal",
    "weightedaverage",
    "average",
    "averagescore",
    "finalscore",
    "final",
    "overallgrade",
}
FEEDBACK_KEYS = {
    "feedback",
    "comments",
    "comment",
    "suggestions",
    "suggestion",
    "notes",
    "note",
    "summary",
    "rationale",
    "recommendations",
    "improvements",
    "nextsteps",
    "justification",
    "reasoning",
    "critique",
    "advice",
    "weaknesses",
    "strengths",
    "issues",
}
NAME_KEYS = ("criterion", "criteria", "name", "label", "category", "aspect", "metric", "dimension", "title", "key")
SCORE_KEYS = ("score", "rating", "value", "points", "grade", "mark", "result")
SCALE_KEYS = ("scale", "max", "maxscore", "outof", "maximum", "of", "max_score", "out_of")
_SCALE_NORM = {_norm_key(k) for k in SCALE_KEYS}


class _Criteria:
    """Lookup of the rubric's criteria by loosely written names."""

    def __init__(self, criteria: list[tuple[str, float]]):
        self.items: list[tuple[str, float]] = []
        seen: set[str] = set()
        for item in criteria or []:
            try:
                name, weight = item[0], item[1]
                name = str(name)
                weight = float(weight)
            except (TypeError, ValueError, IndexError):
                continue
            if name in seen:
                continue
            seen.add(name)
            if not math.isfinite(weight) or weight < 0:
                weight = 0.0
            self.items.append((name, weight))
        self.by_key = {_norm_key(name): name for name, _ in self.items if _norm_key(name)}
        self.names = [name for name, _ in self.items]
        self.patterns: dict[str, re.Pattern[str]] = {}
        for name in self.names:
            tokens = re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", name))
            if not tokens:
                continue
            # "Argument strength" also matches "argument_strength", "Argument-Strength", "Argument **strength**".
            body = r"[\W_]{0,5}".join(re.escape(t) for t in tokens)
            before = "" if _is_cjk(tokens[0][0]) else r"(?<![^\W_])"
            after = "" if _is_cjk(tokens[-1][-1]) else r"(?![^\W_])"
            self.patterns[name] = re.compile(before + body + after, re.IGNORECASE)

    def match_key(self, key: Any) -> str | None:
        if not isinstance(key, str):
            return None
        for variant in _key_variants(key):
            if variant in self.by_key:
                return self.by_key[variant]
        return None


def _normalise(value: float, denominator: float | None = None, percent: bool = False) -> float | None:
    """A raw number and its scale -> 0..10, or None if it cannot be a score."""
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(value):
        return None
    if percent:
        if value > 100:
            return None
        value = value / 10
    elif denominator is not None:
        if not math.isfinite(denominator) or denominator <= 0 or denominator > 1000:
            return None
        if value > denominator * 1.5:  # "2024/10" is not a score
            return None
        value = value / denominator * 10
    else:
        if value > 100:
            return None
        if value > 10:
            value = value / 10
    return round(min(10.0, max(0.0, value)), 2)


# "8.5" and the decimal comma of most of Europe, "8,5"; "1,000" (a thousands separator) is not a score.
_NUM = r"\d{1,4}(?:\.\d+|,\d{1,2}(?!\d))?"
# "out of" in the languages agents are most often asked to write in ("8 von 10", "8 sur 10", "8 из 10").
_OUT_OF = r"/|out\s+of\b|of\s+(?=\d)|(?:von|sur|su|de|sobre|op|из)\s+(?=\d)"
_NUMSCALE = re.compile(
    r"(?<![\w.,])(?P<num>" + _NUM + r")(?![.,]\d)"
    r"(?:\s*(?:" + _OUT_OF + r")\s*(?P<den>" + _NUM + r")|\s*(?P<pct>%|percent\b|pour\s?cent\b|prozent\b))?"
    r"(?![^\W\d_]|\d)",
    re.IGNORECASE,
)


def _num(text: str) -> float:
    return float(text.replace(",", "."))


def _score_from_string(text: str, scale: float | None = None) -> float | None:
    match = _NUMSCALE.search(text)
    if not match:
        return None
    return _score_from_match(match, scale)


def _score_from_match(match: re.Match[str], scale: float | None = None) -> float | None:
    num = _num(match.group("num"))
    if match.group("pct"):
        return _normalise(num, percent=True)
    if match.group("den"):
        return _normalise(num, _num(match.group("den")))
    if scale:
        return _normalise(num, scale)
    return _normalise(num)


def _weighted_overall(scores: dict[str, float], crits: _Criteria) -> float | None:
    if not scores:
        return None
    weights = dict(crits.items)
    total_weight = sum(weights.get(name, 0.0) for name in scores)
    if total_weight <= 0:
        mean = sum(scores.values()) / len(scores)
    else:
        mean = sum(score * weights.get(name, 0.0) for name, score in scores.items()) / total_weight
    return round(min(10.0, max(0.0, mean)), 2)
