"""The one lenient JSON scanner: JSON objects in model output (fenced blocks or balanced `{...}` anywhere),
loaded leniently (trailing commas, comments, single quotes, unquoted keys, `8/10` values) and repaired when
cut off mid-stream. The evaluation's JSON tier and the flows' structured replies (reviews, plans, merges)
both read model JSON through it."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from orchestration.evaluation.scores import _NUM

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


class _Strings:
    """Tracks double-quoted JSON strings (escapes aware) for a scanner fed one character at a time, so
    braces and commas inside strings are not structure. Both scanners below use it."""

    def __init__(self) -> None:
        self.inside = False
        self.escape = False

    def skip(self, ch: str, *, may_open: bool) -> bool:
        """True when `ch` is part of a string (its quotes included); a quote opens one only if `may_open`."""
        if self.inside:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.inside = False
            return True
        if ch == '"' and may_open:
            self.inside = True
            return True
        return False


def balanced_spans(text: str) -> tuple[list[tuple[int, int]], int | None]:
    """Top-level {...} spans (aware of double-quoted strings inside them; quotes in the prose around
    them are not strings) and the start of an unclosed one."""
    spans: list[tuple[int, int]] = []
    depth = 0
    start = 0
    strings = _Strings()
    for i, ch in enumerate(text):
        if strings.skip(ch, may_open=depth > 0):
            continue
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
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


def try_load(text: str) -> Any:
    """`text` as JSON, leniently (comments, trailing commas, unquoted keys, `8/10` values, Python-style
    single quotes); None when it is none of these."""
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


def repair_truncated(text: str) -> Any:
    """JSON cut off mid-stream: close it after the last complete value. None when that does not load."""
    stack: list[str] = []
    cuts: list[tuple[int, str]] = []
    strings = _Strings()
    for i, ch in enumerate(text[:20_000]):
        if strings.skip(ch, may_open=True):
            continue
        if ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack:
                stack.pop()
            if stack:
                cuts.append((i + 1, "".join(reversed(stack))))
        elif ch == "," and stack:
            cuts.append((i, "".join(reversed(stack))))
    for pos, closers in reversed(cuts[-30:]):
        value = try_load(text[:pos] + closers)
        if value is not None:
            return value
    return None


def json_candidates(text: str) -> list[Any]:
    """Every JSON value in `text`: its fenced JSON blocks if any, else its top-level {...} objects (at most
    20) and an unclosed one repaired; each loaded leniently (`try_load`, `repair_truncated`)."""
    values: list[Any] = []
    for fence in FENCE.finditer(text):
        lang = fence.group(1).lower()
        body = fence.group(2).strip()
        if lang not in ("", "json", "json5", "jsonc", "js", "javascript", "python") or not body.startswith(("{", "[")):
            continue
        value = try_load(body)
        if value is None:
            value = repair_truncated(body)
        if value is not None:
            values.append(value)
    if values:
        return values
    spans, unclosed = balanced_spans(text)
    for start, end in spans[:20]:
        value = try_load(text[start:end])
        if value is not None:
            values.append(value)
    if unclosed is not None:
        value = repair_truncated(text[unclosed:])
        if value is not None:
            values.append(value)
    return values
