"""Tier 1 of evaluation parsing: scores and feedback from the JSON objects in a reply."""

from __future__ import annotations

from typing import Any

from orchestration.evaluation.feedback import _prose_feedback
from orchestration.evaluation.json_scan import FENCE, balanced_spans, json_candidates
from orchestration.evaluation.scores import (
    _SCALE_NORM,
    FEEDBACK_KEYS,
    NAME_KEYS,
    OVERALL_KEYS,
    SCORE_KEYS,
    _Criteria,
    _norm_key,
    _normalise,
    _score_from_string,
)


class _JsonCollector:
    def __init__(self, crits: _Criteria):
        self.crits = crits
        self.scores: dict[str, float] = {}
        self.overall: float | None = None
        self.feedback: list[str] = []

    def _scale_of(self, obj: dict[Any, Any]) -> float | None:
        for key, value in obj.items():
            if (
                _norm_key(key) in _SCALE_NORM
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and 0 < value <= 1000
            ):
                return float(value)
        return None

    def _value(self, value: Any, scale: float | None) -> float | None:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int | float):
            return _normalise(value, scale) if scale else _normalise(value)
        if isinstance(value, str):
            return _score_from_string(value, scale)
        if isinstance(value, dict):
            inner_scale = self._scale_of(value) or scale
            for key in SCORE_KEYS:
                for k, v in value.items():
                    if _norm_key(k) == key:
                        return self._value(v, inner_scale)
        return None

    def _text(self, value: Any) -> str:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, list):
            return "\n".join(f"- {t}" for t in (self._text(v) for v in value) if t)
        if isinstance(value, dict):
            return "\n".join(f"{k}: {t}" for k, t in ((k, self._text(v)) for k, v in value.items()) if t)
        return ""

    def collect(self, obj: Any, scale: float | None = None, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(obj, list):
            for item in obj[:200]:
                self.collect(item, scale, depth + 1)
            return
        if not isinstance(obj, dict):
            return
        scale = self._scale_of(obj) or scale
        keys = {_norm_key(k): k for k in obj if isinstance(k, str)}
        # {"criterion": "Clarity", "score": 8, "comment": "..."}
        name_key = next((keys[k] for k in NAME_KEYS if k in keys and isinstance(obj[keys[k]], str)), None)
        if name_key is not None:
            label = obj[name_key]
            score_key = next((keys[k] for k in SCORE_KEYS if k in keys), None)
            crit = self.crits.match_key(label)
            if score_key is not None:
                score = self._value(obj[score_key], scale)
                if crit and score is not None:
                    self.scores.setdefault(crit, score)
                elif _norm_key(label) in OVERALL_KEYS and score is not None and self.overall is None:
                    self.overall = score
            comment = "; ".join(
                self._text(obj[keys[k]]) for k in FEEDBACK_KEYS if k in keys and self._text(obj[keys[k]])
            )
            if comment:
                self.feedback.append(f"{crit or label}: {comment}")
            return
        for key, value in obj.items():
            crit = self.crits.match_key(key)
            norm = _norm_key(key)
            if crit is not None:
                score = self._value(value, scale)
                if score is not None:
                    self.scores.setdefault(crit, score)
                if isinstance(value, dict):
                    comment = "; ".join(
                        self._text(v) for k, v in value.items() if _norm_key(k) in FEEDBACK_KEYS and self._text(v)
                    )
                    if comment:
                        self.feedback.append(f"{crit}: {comment}")
            elif norm in OVERALL_KEYS:
                score = self._value(value, scale)
                if score is not None and self.overall is None:
                    self.overall = score
                elif isinstance(value, dict | list):
                    self.collect(value, scale, depth + 1)
            elif norm in FEEDBACK_KEYS:
                text = self._text(value)
                if text:
                    self.feedback.append(text)
            elif isinstance(value, dict | list):
                self.collect(value, scale, depth + 1)


def _parse_json_tier(text: str, crits: _Criteria) -> tuple[dict[str, float], float | None, str] | None:
    candidates = json_candidates(text)
    if not candidates:
        return None
    collector = _JsonCollector(crits)
    for value in candidates:
        collector.collect(value)
    if not collector.scores and collector.overall is None:
        return None
    feedback = "\n".join(collector.feedback)
    if not feedback:
        # Prose around the JSON block is the model's commentary.
        outside = FENCE.sub("", text)
        spans, unclosed = balanced_spans(outside)
        if unclosed is not None:
            outside = outside[:unclosed]
        for start, end in reversed(spans):
            outside = outside[:start] + outside[end:]
        feedback = _prose_feedback(outside, crits)
    return collector.scores, collector.overall, feedback
