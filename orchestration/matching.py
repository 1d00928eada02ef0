"""Word and line matching with a bounded cost, for change ratios (convergence) and the diff view.

difflib's SequenceMatcher is cubic when a few items repeat a lot and the texts differ in many places:
blank lines between paragraphs, "|" in Markdown tables, "the". A 5,000-word document with every
paragraph touched took over a minute to compare, inside the engine's turn transaction and in a web
request. BoundedMatcher keeps difflib's exact answer while it is cheap, and past a time budget (or
for very long texts) stops searching: the parts not matched yet count as changed, apart from their
common start and end. The result is always a valid diff, only coarser.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from time import monotonic
from typing import Any

# Up to this many items per side, match exactly (autojunk off): short texts keep their precise diffs.
EXACT_ITEMS = 2_000
# Past this many items per side even a single search can take seconds: only common ends are matched.
MAX_ITEMS = 30_000
BUDGET_SECONDS = 1.0


def deadline_in(seconds: float = BUDGET_SECONDS) -> float:
    return monotonic() + seconds


class BoundedMatcher(difflib.SequenceMatcher[Any]):
    # Set by SequenceMatcher.set_seqs; typeshed does not declare them.
    a: Sequence[Any]
    b: Sequence[Any]

    def __init__(self, a: Sequence[Any], b: Sequence[Any], *, deadline: float | None = None) -> None:
        longest = max(len(a), len(b))
        # Over MAX_ITEMS the budget is spent before the first search.
        self.deadline = 0.0 if longest > MAX_ITEMS else (deadline if deadline is not None else deadline_in())
        # Past EXACT_ITEMS, difflib's popularity heuristic keeps each single search near-linear.
        super().__init__(None, a, b, autojunk=longest > EXACT_ITEMS)

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        ahi = len(self.a) if ahi is None else ahi
        bhi = len(self.b) if bhi is None else bhi
        if monotonic() < self.deadline:
            return super().find_longest_match(alo, ahi, blo, bhi)
        # Out of budget: match only the common start of the range, else its common end (linear).
        a, b = self.a, self.b
        size = 0
        while alo + size < ahi and blo + size < bhi and a[alo + size] == b[blo + size]:
            size += 1
        if size:
            return difflib.Match(alo, blo, size)
        while ahi - size > alo and bhi - size > blo and a[ahi - size - 1] == b[bhi - size - 1]:
            size += 1
        return difflib.Match(ahi - size, bhi - size, size)
