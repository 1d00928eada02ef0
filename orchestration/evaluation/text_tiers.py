"""Tiers 2 and 3 of evaluation parsing: scores written as text (`Clarity: 8/10`, tables, sentences), then
bare numbers in order."""

from __future__ import annotations

import re

from orchestration.evaluation.scores import _NUM, _NUMSCALE, _Criteria, _normalise, _num, _score_from_match

_OVERALL_PATTERN = re.compile(
    r"(?<![^\W_])(?:weighted[\W_]{0,3})?(?:overall|total|final|average|gesamt\w*|global\w*|générale?|"
    r"generale?|totale|moyenne|promedio|итог\w*|общ\w+)(?:[\W_]{0,3}(?:score|rating|grade|mark|note|wertung))?"
    r"(?![^\W_])|総合|总体|综合|整体",
    re.IGNORECASE,
)
_NOT_A_SCORE_BEFORE = re.compile(
    # "weight: 2", "round 3", "v2", "paragraph #4", "x2": counters and weights, not scores.
    r"(?:weight(?:ed)?\s*[:=]?|(?:round|version|v|step|paragraph|para|section|line|chapter|page|draft|turn|no|number)"
    r"\s*#?|#|x|×)\s*$",
    re.IGNORECASE,
)
_REVERSE_SCORE = re.compile(
    r"(?<![\w.])(" + _NUM + r")\s*(?:/|out\s+of)\s*(" + _NUM + r")\s*(?:for|on|in)\s+(?:the\s+|its\s+|my\s+)?$",
    re.IGNORECASE,
)
_ALLOWED_AFTER_BARE = {
    "points",
    "point",
    "pts",
    "stars",
    "star",
    "and",
    "but",
    "because",
    "since",
    "as",
    "with",
    "so",
    "given",
    "though",
    "although",
    "overall",
    "here",
    "now",
    "for",
    "on",
    "in",
    "while",
    "which",
    "thanks",
    "due",
}
_LABEL_GAP = re.compile(r"[\s:=|>\-–—(\[\]).,*]*(?:score|rating|grade)?[\s:=|>\-–—(]*", re.IGNORECASE)
_MARKDOWN_NOISE = re.compile(r"\*\*|__|`|(?<!\w)\*(?!\s)|(?<=\w)\*")


def _strip_markdown(text: str) -> str:
    return _MARKDOWN_NOISE.sub("", text)


def _is_label_start(line: str, start: int) -> bool:
    # The name opens the line (after bullets, numbering, heading marks, table pipes): "- Clarity: 8".
    head = line[:start]
    return re.fullmatch(r"[\s#>|*\-+•]*(?:\d+[.)]\s*)?", head) is not None


def _first_score_in_tail(
    tail: str, stop_patterns: list[re.Pattern[str]], require_label_or_scale: bool, label_form: bool
) -> tuple[float, int] | None:
    """The first plausible score after a criterion name on the same line, with its priority."""
    limit = len(tail)
    for pattern in stop_patterns:
        other = pattern.search(tail)
        if other and other.start() < limit:
            limit = other.start()
    # Skip a leading parenthetical such as "(weight 2)" or "(x2)".
    for match in _NUMSCALE.finditer(tail, 0, limit):
        if match.start() > 80:
            break
        before = tail[: match.start()]
        if _NOT_A_SCORE_BEFORE.search(before):
            continue
        # Inside an unclosed "(weight 2" parenthesis
        if before.count("(") > before.count(")") and re.search(r"weight|x\s*$|×", before, re.IGNORECASE):
            continue
        num = _num(match.group("num"))
        has_scale = bool(match.group("den") or match.group("pct"))
        if not has_scale and (num > 100 or (re.fullmatch(r"\d{4}", match.group("num")) and num >= 1000)):
            continue
        label = label_form and re.fullmatch(
            r"[\s:=|>\-–—(\[\]).,*]*(?:score|rating|grade)?[\s:=|>\-–—(]*", before, re.I
        )
        if not has_scale and not label:
            after = tail[match.end() :]
            word = re.match(r"\s*([A-Za-z]+)", after)
            if word and word.group(1).lower() not in _ALLOWED_AFTER_BARE:
                continue
            if require_label_or_scale:
                continue
        score = _score_from_match(match)
        if score is None:
            continue
        return score, (2 if has_scale or label else 1)
    return None


def _parse_natural_tier(text: str, crits: _Criteria) -> tuple[dict[str, float], float | None, set[int]] | None:
    clean = _strip_markdown(text)
    lines = clean.splitlines()
    names_patterns = list(crits.patterns.items())
    best: dict[str, tuple[int, int, float]] = {}  # name -> (priority, -order, score)
    overall_best: tuple[int, int, float] | None = None
    used_lines: set[int] = set()
    order = 0

    for index, line in enumerate(lines):
        for name, pattern in [*names_patterns, ("__overall__", _OVERALL_PATTERN)]:
            others = [p for n, p in names_patterns if n != name]
            if name != "__overall__":
                others.append(_OVERALL_PATTERN)
            for occurrence in pattern.finditer(line):
                order += 1
                tail = line[occurrence.end() : occurrence.end() + 200]
                label_form = _is_label_start(line, occurrence.start())
                # "7 out of 10 for structure" names the criterion after its score; that wins.
                found: tuple[float, int] | None = None
                reverse = _REVERSE_SCORE.search(line[max(0, occurrence.start() - 80) : occurrence.start()])
                if reverse:
                    reverse_score = _normalise(_num(reverse.group(1)), _num(reverse.group(2)))
                    found = (reverse_score, 2) if reverse_score is not None else None
                if found is None:
                    found = _first_score_in_tail(
                        tail, others, require_label_or_scale=(name == "__overall__"), label_form=label_form
                    )
                if found is None and label_form and not re.search(r"\d", tail):
                    # "### Clarity" then "Score: 8/10" on the next non-empty line.
                    for follow in lines[index + 1 : index + 3]:
                        if not follow.strip():
                            continue
                        m = re.match(r"\s*[-*>]*\s*(?:score|rating|grade)?\s*[:=\-]?\s*", follow, re.I)
                        rest = follow[m.end() :] if m else follow
                        sm = _NUMSCALE.match(rest)
                        if sm:
                            score = _score_from_match(sm)
                            if score is not None:
                                found = (score, 2)
                        break
                if found is None:
                    continue
                score, priority = found
                used_lines.add(index)
                key = (priority, -order, score)
                if name == "__overall__":
                    if overall_best is None or key[:2] > overall_best[:2]:
                        overall_best = key
                elif name not in best or key[:2] > best[name][:2]:
                    best[name] = key

    scores = {name: value[2] for name, value in best.items()}
    overall = overall_best[2] if overall_best else None
    if not scores and overall is None:
        return None
    return scores, overall, used_lines


# --------------------------------------------------------------------------------------------------
# Tier 3: fallback numbers
# --------------------------------------------------------------------------------------------------


def _parse_fallback_tier(text: str, crits: _Criteria) -> dict[str, float] | None:
    if not crits.names:
        return None
    numbers: list[float] = []
    for line in _strip_markdown(text).splitlines():
        # "1. Clarity" is a list marker, not a score.
        line = re.sub(r"^\s*\d{1,3}[.)](?=\s)", " ", line)
        for match in _NUMSCALE.finditer(line):
            before = line[: match.start()]
            if _NOT_A_SCORE_BEFORE.search(before):
                continue
            raw = match.group("num")
            has_scale = bool(match.group("den") or match.group("pct"))
            if not has_scale and (_num(raw) > 100 or len(re.split(r"[.,]", raw)[0]) == 4):
                continue
            score = _score_from_match(match)
            if score is not None:
                numbers.append(score)
            if len(numbers) >= len(crits.names):
                break
        if len(numbers) >= len(crits.names):
            break
    if not numbers:
        return None
    return dict(zip(crits.names, numbers, strict=False))
