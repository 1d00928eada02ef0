"""Splitting an agent's reply into document and evaluation, and parsing the evaluation's scores.

Agents are asked (see `rubric_instructions`) to return the complete document first and then a JSON
evaluation inside `<evaluation>` tags. Real models drift from that, so parsing has three tiers and
records which one produced the scores:

1. ``json``: a fenced ```json block or the first balanced ``{...}`` object anywhere. Lenient: trailing
   commas, comments, single quotes, unquoted keys, values such as ``"8/10"`` and JSON cut off mid-stream.
2. ``natural``: lines such as ``Clarity: 8/10``, ``**Clarity** - 8.5 out of 10``, ``| Clarity | 80% |``
   or ``I'd rate the clarity 7 out of 10``.
3. ``fallback``: bare numbers in order, assigned to the criteria in order (``8 7 9``).

``none`` means nothing usable was found. Scales are normalised to 0-10: ``/5`` x2, ``/100`` and ``%``
/10, any ``/N`` or ``out of N`` as N; a bare number above 10 (up to 100) is read as a percentage.
Numbers that are clearly not scores (years, anything above 100 without a scale, list markers, "round 2")
are ignored. The parser never raises: model output is untrusted input and a bad evaluation must not
fail a turn that produced a good document.

The package, by purpose: `reply` (document / evaluation / reasoning split), `scores` (criteria names, score
numbers, the weighted overall), `json_scan` (the one lenient JSON scanner, also used by the flows'
structured replies), `json_tier`, `text_tiers` (natural and fallback), `feedback`, `parse` (the entry
points), `rubric` (what we ask for), `result` (`Evaluation`, limits). Import from the package.
"""

from __future__ import annotations

from orchestration.evaluation.parse import parse_evaluation, parse_reply
from orchestration.evaluation.reply import split_output, split_reasoning
from orchestration.evaluation.result import MAX_FEEDBACK_CHARS, MAX_PARSE_CHARS, TIERS, Evaluation
from orchestration.evaluation.rubric import rubric_instructions

__all__ = [
    "MAX_FEEDBACK_CHARS",
    "MAX_PARSE_CHARS",
    "TIERS",
    "Evaluation",
    "parse_evaluation",
    "parse_reply",
    "rubric_instructions",
    "split_output",
    "split_reasoning",
]
