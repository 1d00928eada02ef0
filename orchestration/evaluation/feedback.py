"""The evaluation's feedback when it is prose rather than a JSON field: the lines that are not scores."""

from __future__ import annotations

import re

from orchestration.evaluation.result import MAX_FEEDBACK_CHARS
from orchestration.evaluation.scores import _Criteria
from orchestration.evaluation.text_tiers import _strip_markdown

_SCORE_WORDS = {"out", "of", "overall", "score", "scores", "rating", "ratings", "total", "weight", "weighted", "i", "d"}
_SCORE_WORDS |= {"rate", "the", "give", "it", "a", "an", "is", "evaluation", "self", "final", "average", "percent"}
_SCORE_WORDS |= {"criterion", "criteria", "grade", "points", "pts", "json", "and", "notes", "comment", "comments"}


_FEEDBACK_LABEL = re.compile(r"^(?:feedback|comments?|suggestions?|notes?)\s*:\s*", re.IGNORECASE)


def _prose_feedback(text: str, crits: _Criteria, skip_lines: set[int] | None = None) -> str:
    """The lines that say something beyond a score: what the next agent should act on."""
    kept: list[str] = []
    name_tokens = {t.lower() for name in crits.names for t in re.findall(r"[A-Za-z]+", name)}
    for index, line in enumerate(_strip_markdown(text).splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith("```") or re.fullmatch(r"</?\s*evaluation\s*>", stripped, re.I):
            continue
        if re.fullmatch(r"[|\-:\s]+", stripped):  # table rule
            continue
        words = [w for w in re.findall(r"[A-Za-z]+", stripped) if w.lower() not in _SCORE_WORDS | name_tokens]
        if sum(len(w) for w in words) < 4:
            continue
        if skip_lines is not None and index in skip_lines and len(words) < 2:
            continue
        kept.append(_FEEDBACK_LABEL.sub("", stripped.lstrip("#").strip()))
    feedback = "\n".join(kept)
    return feedback[:MAX_FEEDBACK_CHARS]
