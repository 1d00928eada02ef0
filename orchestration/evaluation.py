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
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------------
# Splitting document / evaluation
# --------------------------------------------------------------------------------------------------

_EVAL_OPEN = re.compile(r"<\s*evaluation\s*>", re.IGNORECASE)
_EVAL_CLOSE = re.compile(r"<\s*/\s*evaluation\s*>", re.IGNORECASE)
# The block must run to the end of the reply: a JSON example inside the document is not an evaluation.
_TRAILING_JSON_FENCE = re.compile(
    r"```[ \t]*(?:json5?|jsonc)?[ \t]*\n(\s*[{\[](?:(?!```).)*?)(?:```\s*|\Z)\Z", re.IGNORECASE | re.S
)
# "## Evaluation", "### Self-evaluation of the draft", "**Evaluation**", "Evaluation:" - but not a sentence
# that merely starts with the word.
_HEADING_LINE = (
    r"[ \t]*(?:#{1,6}[ \t]*(?:self[- ])?evaluation\b[^\n]*"
    r"|(?:\*\*|__)[ \t]*(?:self[- ])?evaluation[ \t]*:?[ \t]*(?:\*\*|__)[ \t]*:?[^\n]*"
    r"|(?:self[- ])?evaluation[ \t]*:[^\n]*)"
)
_EVAL_HEADING = re.compile(r"^" + _HEADING_LINE + r"$", re.IGNORECASE | re.M)
_HEADING_BEFORE = re.compile(r"(?:\n|^)" + _HEADING_LINE + r"\s*\Z", re.IGNORECASE)
_RULE_AT_END = re.compile(r"(?:\n[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*)+\s*\Z")


_WRAPPED_DOCUMENT = re.compile(r"\A\s*<document>\s*(.*?)\s*(?:</document>\s*)?\Z", re.IGNORECASE | re.S)
_FENCED_DOCUMENT = re.compile(r"\A\s*```[ \t]*(?:markdown|md)[ \t]*\n(.*?)\n```\s*\Z", re.IGNORECASE | re.S)


def _clean_document(doc: str) -> str:
    doc = _RULE_AT_END.sub("", doc.rstrip())
    # Models sometimes echo the <document> tags of the prompt or fence the whole document.
    for wrapper in (_WRAPPED_DOCUMENT, _FENCED_DOCUMENT):
        match = wrapper.match(doc)
        if match:
            doc = match.group(1)
    return doc.strip()


_THINK_BLOCK = re.compile(r"<\s*(think|thinking|reasoning)\s*>(.*?)(?:<\s*/\s*\1\s*>|\Z)", re.IGNORECASE | re.S)
_THINK_CLOSE = re.compile(r"<\s*/\s*(?:think|thinking|reasoning)\s*>", re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str]:
    """(answer, reasoning): take `<think>...</think>` blocks out of a reply (DeepSeek-R1, Qwen and other
    OpenAI-compatible reasoning models stream them as content). Never raises.

    Also handles the two broken shapes seen in the wild: a reply that starts inside the block (the server
    ate the opening tag, so only "</think>" is there) and a block never closed (cut off while thinking: all
    of it is reasoning). The answer is what the document and the evaluation are read from.
    """
    if not isinstance(text, str) or ("think" not in text.lower() and "reasoning" not in text.lower()):
        return (text if isinstance(text, str) else ""), ""
    reasoning: list[str] = []
    first_open = _THINK_BLOCK.search(text)
    first_close = _THINK_CLOSE.search(text)
    if first_close and (first_open is None or first_close.start() < first_open.start()):
        reasoning.append(text[: first_close.start()])
        text = text[first_close.end() :]

    def take(match: re.Match[str]) -> str:
        reasoning.append(match.group(2))
        return ""

    answer = _THINK_BLOCK.sub(take, text)
    if not reasoning:
        return text, ""
    return answer.lstrip(), "\n\n".join(part.strip() for part in reasoning if part.strip())


# A trailing run of "Clarity: 8/10" / "Overall I would rate this 9.5 out of 10." lines with no tags or
# heading: the evaluation, not the document's ending.
_SCALED_NUMBER = re.compile(
    r"(?<![\w.,])\d{1,3}(?:[.,]\d{1,2})?\s*(?:/|out\s+of|von|sur|su|de|из)\s*(?:10|5|100)(?![\d.,]\d)",
    re.IGNORECASE,
)
# "Clarity: 80%" is a score line; "the pilots showed 30% savings." is prose.
_LABELLED_PERCENT = re.compile(r"^[^\W\d][\w\s'’-]{0,40}[:=|–-]\s*\d{1,3}(?:[.,]\d{1,2})?\s*%\W*$")
_SCORES_LABEL = re.compile(
    r"[#*_>\s]*(?:scores?|ratings?|self[- ]?(?:assessment|evaluation)|assessment|bewertung|évaluation|"
    r"notes?|valutazione|evaluación|оценка|評価|评分)[\w\s-]{0,20}:?[*_\s]*",
    re.IGNORECASE,
)


def _split_trailing_scores(text: str) -> tuple[str, str] | None:
    lines = text.rstrip().split("\n")
    index = len(lines)
    found = 0
    while index > 0:
        line = _strip_markdown(lines[index - 1]).strip()
        if not line or re.fullmatch(r"[|\-:\s]+", line):
            index -= 1
            continue
        scored = _SCALED_NUMBER.search(line) or _LABELLED_PERCENT.match(line)
        if len(line) <= 160 and scored and re.search(r"[^\W\d_]", line):
            found += 1
            index -= 1
            continue
        break
    if not found:
        return None
    if index > 0 and _SCORES_LABEL.fullmatch(_strip_markdown(lines[index - 1])):
        index -= 1
    return _clean_document("\n".join(lines[:index])), "\n".join(lines[index:]).strip()


def split_output(text: str) -> tuple[str, str]:
    """Return (document, evaluation_text). With no evaluation found: (text.strip(), "")."""
    try:
        return _split_output(text)
    except Exception:  # untrusted model output: never fail the turn over it
        logger.exception("split_output failed")
        return (text.strip() if isinstance(text, str) else "", "")


def _split_output(text: str) -> tuple[str, str]:
    if not isinstance(text, str):
        return "", ""
    # The evaluation comes last, so the last opening tag wins (a document may quote the tag earlier).
    opens = list(_EVAL_OPEN.finditer(text))
    if opens:
        start = opens[-1]
        close = _EVAL_CLOSE.search(text, start.end())
        evaluation = text[start.end() : close.start()] if close else text[start.end() :]
        document = text[: start.start()]
        document = _HEADING_BEFORE.sub("", document)
        return _clean_document(document), evaluation.strip()

    # A trailing fenced JSON block (the model forgot the tags).
    fence = _TRAILING_JSON_FENCE.search(text)
    if fence:
        block = fence.group(1).strip()
        if block.startswith(("{", "[")) and re.search(r"\d", block):
            document = _HEADING_BEFORE.sub("", text[: fence.start()])
            return _clean_document(document), block

    # A final "## Evaluation" / "Evaluation:" section.
    headings = list(_EVAL_HEADING.finditer(text))
    if headings:
        heading = headings[-1]
        evaluation = text[heading.start() :]
        if re.search(r"\d", evaluation):
            return _clean_document(text[: heading.start()]), evaluation.strip()

    trailing = _split_trailing_scores(text)
    if trailing is not None:
        return trailing
    return text.strip(), ""


# --------------------------------------------------------------------------------------------------
# Criteria names and score numbers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Tier 1: JSON
# --------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def _balanced_spans(text: str) -> tuple[list[tuple[int, int]], int | None]:
    """Top-level {...} spans (aware of double-quoted strings) and the start of an unclosed one."""
    spans: list[tuple[int, int]] = []
    depth = 0
    start = 0
    in_string = False
    escape = False
    for i, ch in enumerate(text):
        if depth and in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
        elif ch == '"' and depth:
            in_string = True
    return spans, (start if depth else None)


_LINE_COMMENT = re.compile(r"(^|[\s,{\[])//[^\n]*")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_UNQUOTED_KEY = re.compile(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_ \-]{0,60}?)\s*:")
_BARE_FRACTION = re.compile(r"(:\s*)(" + _NUM + r"\s*(?:/\s*" + _NUM + r"|%))(?=\s*[,}\]\n])")
# {"Clarity": 8,5, ...}: a decimal comma in a bare JSON number (quoted, it is read by the string path).
_BARE_DECIMAL_COMMA = re.compile(r"(:\s*)(\d{1,2},\d{1,2})(?=\s*[,}\]\n])")


def _cleanup_json(text: str) -> str:
    text = _BLOCK_COMMENT.sub("", text)
    text = _LINE_COMMENT.sub(r"\1", text)
    text = _BARE_FRACTION.sub(lambda m: f'{m.group(1)}"{m.group(2)}"', text)
    text = _BARE_DECIMAL_COMMA.sub(lambda m: f'{m.group(1)}"{m.group(2)}"', text)
    text = _UNQUOTED_KEY.sub(lambda m: f'{m.group(1)}"{m.group(2).strip()}":', text)
    text = _TRAILING_COMMA.sub(r"\1", text)
    return text


def _try_load(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    cleaned = _cleanup_json(text)
    try:
        return json.loads(cleaned)
    except (ValueError, RecursionError):
        pass
    # Single-quoted, Python-style dicts ({'Clarity': 8, 'done': True}).
    if "'" in cleaned and len(cleaned) < 20_000:
        pythonish = re.sub(r"\btrue\b", "True", cleaned)
        pythonish = re.sub(r"\bfalse\b", "False", pythonish)
        pythonish = re.sub(r"\bnull\b", "None", pythonish)
        try:
            value = ast.literal_eval(pythonish)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if isinstance(value, dict | list):
            return value
    return None


def _repair_truncated(text: str) -> Any:
    """JSON cut off mid-stream: close it after the last complete value."""
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    in_string = False
    escape = False
    for i, ch in enumerate(text[:20_000]):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack:
                stack.pop()
            if stack:
                cuts.append((i + 1, "".join(reversed(stack))))
        elif ch == "," and stack:
            cuts.append((i, "".join(reversed(stack))))
    for pos, closers in reversed(cuts[-30:]):
        value = _try_load(text[:pos] + closers)
        if value is not None:
            return value
    return None


def _json_candidates(text: str) -> list[Any]:
    values: list[Any] = []
    for fence in _FENCE.finditer(text):
        lang = fence.group(1).lower()
        body = fence.group(2).strip()
        if lang not in ("", "json", "json5", "jsonc", "js", "javascript", "python") or not body.startswith(("{", "[")):
            continue
        value = _try_load(body)
        if value is None:
            value = _repair_truncated(body)
        if value is not None:
            values.append(value)
    if values:
        return values
    spans, unclosed = _balanced_spans(text)
    for start, end in spans[:20]:
        value = _try_load(text[start:end])
        if value is not None:
            values.append(value)
    if unclosed is not None:
        value = _repair_truncated(text[unclosed:])
        if value is not None:
            values.append(value)
    return values


class _JsonCollector:
    def __init__(self, crits: _Criteria):
        self.crits = crits
        self.scores: dict[str, float] = {}
        self.overall: float | None = None
        self.feedback: list[str] = []

    def _scale_of(self, obj: dict) -> float | None:
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
    candidates = _json_candidates(text)
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
        outside = _FENCE.sub("", text)
        spans, unclosed = _balanced_spans(outside)
        if unclosed is not None:
            outside = outside[:unclosed]
        for start, end in reversed(spans):
            outside = outside[:start] + outside[end:]
        feedback = _prose_feedback(outside, crits)
    return collector.scores, collector.overall, feedback


# --------------------------------------------------------------------------------------------------
# Tier 2: natural language
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Feedback and the entry point
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# What we ask for
# --------------------------------------------------------------------------------------------------


def _fmt_weight(weight: float) -> str:
    return f"{weight:g}"


def rubric_instructions(criteria: list[tuple[str, str, float]], *, lead: str | None = None) -> str:
    """The evaluation request appended to every agent's system prompt; `lead` says what is scored."""
    lines = [
        "## Your evaluation",
        lead or "After the complete document, evaluate the document as it stands after your revision.",
    ]
    if criteria:
        lines.append(
            "Score each criterion below from 0 (very poor) to 10 (excellent); decimals such as 7.5 are fine. "
            "The weights say how much each criterion counts towards the overall score, which is computed for you."
        )
        lines.append("")
        lines.append("Criteria:")
        for name, description, weight in criteria:
            entry = f"- {name} (weight {_fmt_weight(float(weight))})"
            if description and description.strip():
                entry += f": {description.strip()}"
            lines.append(entry)
        example_scores = ", ".join(f"{json.dumps(str(name))}: <0-10>" for name, _, _ in criteria)
        example = "{" + f'"scores": {{{example_scores}}}, "feedback": "<what the next agent should improve>"' + "}"
    else:
        lines.append("Give one overall score from 0 (very poor) to 10 (excellent); decimals such as 7.5 are fine.")
        example = '{"overall": <0-10>, "feedback": "<what the next agent should improve>"}'
    lines += [
        "",
        "Write the evaluation as one JSON object inside <evaluation> tags, exactly in this shape, "
        "with numbers in place of the <0-10> placeholders:",
        "<evaluation>",
        example,
        "</evaluation>",
        "Use the criterion names exactly as written above. Keep the feedback short and concrete: it is passed "
        "to the next agent. Write nothing after </evaluation>.",
    ]
    return "\n".join(lines)
