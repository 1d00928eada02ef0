"""Parsing the structured part of a reply: issues (critics, editors), decisions (synthesizer), resolutions
(moderator). Like scores (orchestration.evaluation), in tiers, never raising, the tier recorded:

1. ``json``: a ``<issues>`` / ``<decisions>`` / ``<resolutions>`` block (or a fenced or bare JSON value)
   holding a list, or an object with the list under a usual key. Lenient like the score parser.
2. ``text``: list items or "Issue 1" blocks with labelled parts (``[HIGH] "passage" - problem. Fix: ...``,
   ``Severity: high`` / ``Passage:`` / ``Problem:`` / ``Fix:`` lines, ``E2: accepted - reason``).
3. ``fallback``: plain list items, read as medium-severity issues (or decisions with no verdict).

``none``: nothing usable. Model output is untrusted input: a bad list must never fail a turn.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from orchestration.evaluation.json_scan import json_candidates, repair_truncated, try_load

logger = logging.getLogger(__name__)

SEVERITIES = ("high", "medium", "low")
MAX_ITEMS = 40
MAX_FIELD_CHARS = 1_000
MAX_PARSE_CHARS = 60_000

# Words models use for severity, mapped onto ours.
_SEVERITY_WORDS = {
    "critical": "high",
    "blocker": "high",
    "blocking": "high",
    "severe": "high",
    "major": "high",
    "high": "high",
    "important": "medium",
    "moderate": "medium",
    "medium": "medium",
    "med": "medium",
    "minor": "low",
    "low": "low",
    "nit": "low",
    "nitpick": "low",
    "trivial": "low",
    "cosmetic": "low",
}
_SEVERITY_RE = re.compile(r"\b(" + "|".join(sorted(_SEVERITY_WORDS, key=len, reverse=True)) + r")\b", re.I)

_VERDICT_WORDS = {
    # decisions (synthesizer)
    "accepted": "accepted",
    "accept": "accepted",
    "took": "accepted",
    "taken": "accepted",
    "applied": "accepted",
    "adopted": "accepted",
    "kept": "accepted",
    "rejected": "rejected",
    "reject": "rejected",
    "declined": "rejected",
    "decline": "rejected",
    "ignored": "rejected",
    "skipped": "rejected",
    "not applied": "rejected",
    "partly": "partly",
    "partially": "partly",
    "partial": "partly",
    "modified": "partly",
    "adapted": "partly",
    # resolutions (moderator)
    "fixed": "fixed",
    "resolved": "fixed",
    "addressed": "fixed",
    "done": "fixed",
    "deferred": "declined",
    "won't fix": "declined",
    "wontfix": "declined",
}
_VERDICT_RE = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(_VERDICT_WORDS, key=len, reverse=True)) + r")\b", re.I
)
# For resolutions "accepted" reads as fixed, "rejected" as declined.
_RESOLUTION_OF = {
    "accepted": "fixed",
    "rejected": "declined",
    "partly": "partly",
    "fixed": "fixed",
    "declined": "declined",
}
_DECISION_OF = {
    "fixed": "accepted",
    "declined": "rejected",
    "accepted": "accepted",
    "rejected": "rejected",
    "partly": "partly",
}

LIST_KEYS = {
    "issues": ("issues", "problems", "findings", "edits", "suggestions", "comments", "items", "critique"),
    "decisions": ("decisions", "suggestions", "edits", "items", "choices"),
    "resolutions": ("resolutions", "issues", "actions", "items", "responses"),
}
_FIELD_KEYS = {
    "severity": ("severity", "level", "priority", "importance", "impact"),
    "passage": ("passage", "quote", "location", "where", "excerpt", "section", "text", "target"),
    "problem": ("problem", "issue", "description", "comment", "finding", "concern", "what", "critique"),
    "fix": ("fix", "suggested_fix", "suggestion", "suggested fix", "recommendation", "proposed_fix", "edit", "change"),
    "id": ("id", "ref", "issue_id", "issue", "suggestion_id", "edit_id", "number", "item"),
    "verdict": ("decision", "verdict", "action", "status", "outcome", "resolution"),
    "reason": ("reason", "why", "note", "rationale", "explanation", "comment", "details"),
}
_ID_RE = re.compile(r"\b([EI])\s*-?\s*(\d{1,3})\b")


def _clip(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = "; ".join(str(v) for v in value)
    return re.sub(r"\s+", " ", str(value)).strip()[:MAX_FIELD_CHARS]


def severity_of(value: Any) -> str | None:
    match = _SEVERITY_RE.search(str(value or ""))
    return _SEVERITY_WORDS[match.group(1).lower()] if match else None


def _verdict_of(value: Any) -> str | None:
    match = _VERDICT_RE.search(str(value or ""))
    return _VERDICT_WORDS[match.group(1).lower()] if match else None


def _norm_id(value: Any) -> str:
    match = _ID_RE.search(str(value or "").upper())
    return f"{match.group(1)}{int(match.group(2))}" if match else _clip(value)[:20]


def _get(obj: dict[str, Any], field: str) -> Any:
    lowered = {str(k).strip().lower().replace("-", "_"): v for k, v in obj.items()}
    for key in _FIELD_KEYS[field]:
        key = key.replace("-", "_")
        if key in lowered and lowered[key] not in (None, ""):
            return lowered[key]
    return None


def _block(text: str, tag: str) -> str | None:
    """The content of the last <tag>...</tag> block (an unclosed one runs to the end)."""
    opens = list(re.finditer(rf"<\s*{tag}\s*>", text, re.I))
    if not opens:
        return None
    start = opens[-1].end()
    close = re.compile(rf"<\s*/\s*{tag}\s*>", re.I).search(text, start)
    return text[start : close.start() if close else len(text)].strip()


def strip_blocks(text: str, tags: tuple[str, ...] = ("issues", "decisions", "resolutions")) -> str:
    """The reply without its structured blocks (what a reader sees as the comments or the document)."""
    for tag in tags:
        text = re.sub(rf"<\s*{tag}\s*>.*?(?:<\s*/\s*{tag}\s*>|\Z)", "", text, flags=re.I | re.S)
    return text.strip()


# --- tier 1: JSON ---------------------------------------------------------------------------------


def _list_from(value: Any, kind: str) -> list[Any] | None:
    if isinstance(value, list):
        return value if all(isinstance(v, dict) for v in value) else None
    if isinstance(value, dict):
        lowered = {str(k).strip().lower(): v for k, v in value.items()}
        for key in LIST_KEYS[kind]:
            if isinstance(lowered.get(key), list):
                return [v for v in lowered[key] if isinstance(v, dict)]
        # {"high": [...], "medium": [...]} grouped by severity
        if kind == "issues" and any(severity_of(k) for k in lowered):
            items: list[dict[str, Any]] = []
            for key, group in lowered.items():
                if isinstance(group, list):
                    items.extend(
                        {**g, "severity": key} if isinstance(g, dict) else {"problem": g, "severity": key}
                        for g in group
                    )
            return items or None
    return None


def _item_from_dict(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    if kind == "issues":
        problem = _clip(_get(obj, "problem"))
        fix = _clip(_get(obj, "fix"))
        if not problem and not fix:
            return None
        return {
            "severity": severity_of(_get(obj, "severity")) or "medium",
            "passage": _clip(_get(obj, "passage")),
            "problem": problem or fix,
            "fix": fix,
        }
    verdict = _verdict_of(_get(obj, "verdict"))
    ident = _get(obj, "id")
    reason = _clip(_get(obj, "reason"))
    if verdict is None and ident is None and not reason:
        return None
    table = _DECISION_OF if kind == "decisions" else _RESOLUTION_OF
    return {
        "id": _norm_id(ident) if ident is not None else "",
        "verdict": table.get(verdict or "", ""),
        "reason": reason,
    }


# --- tier 2: labelled text -----------------------------------------------------------------------------

_ITEM_START = re.compile(
    r"^\s*(?:[-*•+]|\d{1,3}[.)]|#{1,4}\s*(?:issue|edit|finding|suggestion)\b|(?:issue|edit|finding)\s*\d+\s*[:.)-])",
    re.I,
)
_LABEL = re.compile(
    r"(?:^|\s|\*\*|\|)(severity|level|priority|passage|quote|location|where|problem|issue|why|fix|suggested fix|"
    r"suggestion|recommendation|reason|decision|action|verdict)\**\s*[:=]\s*",
    re.I,
)
_LABEL_FIELD = {
    "severity": "severity", "level": "severity", "priority": "severity",
    "passage": "passage", "quote": "passage", "location": "passage", "where": "passage",
    "problem": "problem", "issue": "problem",
    "fix": "fix", "suggested fix": "fix", "suggestion": "fix", "recommendation": "fix",
    "reason": "reason", "why": "reason",
    "decision": "verdict", "action": "verdict", "verdict": "verdict",
}  # fmt: skip
_QUOTED = re.compile(r"[\"“«]([^\"”»]{3,400})[\"”»]")
_ARROW_FIX = re.compile(r"\s(?:->|→|=>)\s*(.+)$")


def _items_text(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not any(_ITEM_START.match(line) for line in lines):
        return [line.strip() for line in lines]  # no list markers: one item a line
    items: list[list[str]] = []
    for line in lines:
        if not line.strip():
            continue
        if _ITEM_START.match(line) or not items:
            items.append([line])
        else:
            items[-1].append(line)
    return ["\n".join(lines).strip() for lines in items]


def _labelled(item: str) -> dict[str, str]:
    found: dict[str, str] = {}
    marks = list(_LABEL.finditer(item))
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(item)
        field = _LABEL_FIELD[mark.group(1).lower()]
        found.setdefault(field, item[mark.end() : end].strip(" *|-–—;,.\n"))
    return found


def _clean_marker(item: str) -> str:
    item = re.sub(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s*", "", item)
    return re.sub(r"\*\*|__|`", "", item).strip()


def _issue_from_text(item: str, strict: bool) -> dict[str, Any] | None:
    body = _clean_marker(item)
    labels = _labelled(body)
    severity = severity_of(labels.get("severity")) or severity_of(body[:60])
    if strict and severity is None and not labels:
        return None
    passage = (labels.get("passage") or "").strip("\"“”«»' ")
    if not passage and (quoted := _QUOTED.search(body)):
        passage = quoted.group(1)
    fix = labels.get("fix") or ""
    problem = labels.get("problem") or ""
    if not problem:
        # What is left once labels, the severity tag and the arrow-fix are removed.
        rest = _LABEL.split(body)[0] if labels else body
        rest = re.sub(
            r"^\s*\[?\(?\s*(?:" + _SEVERITY_RE.pattern + r")\s*(?:severity|priority)?\s*\]?\)?\s*[:\-–—]?\s*",
            "",
            rest,
            flags=re.I,
        )
        if not fix and (arrow := _ARROW_FIX.search(rest)):
            fix = arrow.group(1)
            rest = rest[: arrow.start()]
        if passage:
            rest = rest.replace(f"“{passage}”", "").replace(f'"{passage}"', "")
        problem = rest.strip(" :-–—.,\n")
    if not problem and not fix:
        return None
    return {
        "severity": severity or "medium",
        "passage": _clip(passage),
        "problem": _clip(problem or fix),
        "fix": _clip(fix),
    }


def _verdict_from_text(item: str, kind: str, strict: bool) -> dict[str, Any] | None:
    body = _clean_marker(item)
    labels = _labelled(body)
    verdict = _verdict_of(labels.get("verdict")) or _verdict_of(body)
    ident = _ID_RE.search(body.upper())
    if strict and (verdict is None or ident is None):
        return None
    if not body:
        return None
    reason = labels.get("reason") or ""
    if not reason:
        reason = re.split(r"\s[-–—:]\s|\bbecause\b|\bsince\b", body, maxsplit=1)[-1] if verdict else body
    table = _DECISION_OF if kind == "decisions" else _RESOLUTION_OF
    return {
        "id": f"{ident.group(1)}{int(ident.group(2))}" if ident else "",
        "verdict": table.get(verdict or "", ""),
        "reason": _clip(reason),
    }


# --- entry point --------------------------------------------------------------------------------------


def parse_items(text: str, kind: str) -> tuple[list[dict[str, Any]], str]:
    """(items, tier) for kind in {"issues", "decisions", "resolutions"}. Never raises.

    issues:      [{"severity": "high"|"medium"|"low", "passage", "problem", "fix"}]
    decisions:   [{"id": "E2", "verdict": "accepted"|"rejected"|"partly"|"", "reason"}]
    resolutions: [{"id": "I3", "verdict": "fixed"|"partly"|"declined"|"", "reason"}]
    """
    try:
        return _parse_items(text if isinstance(text, str) else "", kind)
    except Exception:  # untrusted model output: never fail the turn over it
        logger.exception("parse_items failed")
        return [], "none"


def _parse_items(text: str, kind: str) -> tuple[list[dict[str, Any]], str]:
    text = text[-MAX_PARSE_CHARS:]
    block = _block(text, kind)
    source = block if block is not None else text
    # Tier 1: JSON in the block, or anywhere in the reply when there is no block.
    candidates = []
    if block is not None:
        loaded = try_load(block)
        if loaded is None and block.startswith("["):
            loaded = repair_truncated(block)  # a list cut off mid-stream
        candidates = [loaded] if loaded is not None else json_candidates(block)
    else:
        candidates = json_candidates(text)
    for value in candidates:
        items = _list_from(value, kind)
        if items is not None:
            parsed = [p for p in (_item_from_dict(i, kind) for i in items[:MAX_ITEMS]) if p]
            if parsed or not items:
                return parsed, "json"
    # Tier 2 and 3: text items. Without a block, only lines that look like items count.
    pieces = _items_text(source)[:MAX_ITEMS] if source.strip() else []
    if kind == "issues":
        strict = [p for p in (_issue_from_text(i, strict=True) for i in pieces) if p]
        if strict:
            return strict, "text"
        if block is not None:
            loose = [p for p in (_issue_from_text(i, strict=False) for i in pieces) if p]
            if loose:
                return loose, "fallback"
        return [], "none"
    strict = [p for p in (_verdict_from_text(i, kind, strict=True) for i in pieces) if p]
    if strict:
        return strict, "text"
    if block is not None:
        loose = [p for p in (_verdict_from_text(i, kind, strict=False) for i in pieces) if p]
        if loose:
            return loose, "fallback"
    return [], "none"


def severity_counts(issues: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for issue in issues:
        severity = issue.get("severity") if isinstance(issue, dict) else None
        if severity in counts:
            counts[severity] += 1
    return counts
