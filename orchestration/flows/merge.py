"""Applying a reviewer's inline edits mechanically, and parsing the pipeline's structured replies.

A reviewer proposes edits as find/replace pairs with reasons. ``apply_edits`` applies each one where its
``find`` text occurs exactly once in the document (after the edits before it), and reports every edit
it could not apply with the reason: not found, ambiguous (found N times), empty, or a no-op. As a
fallback, an edit whose ``find`` differs from the document only in whitespace (line breaks, double
spaces) is applied when that looser match is also unique. Nothing is ever guessed beyond that.

Parsers never raise (model output is untrusted); they record the tier like the score parser:
``json`` (a tagged block, a fenced or bare JSON value), ``text`` (labelled lines), ``none``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestration.evaluation.json_scan import json_candidates, try_load

MAX_EDITS = 40
MAX_FIELD = 2_000
FLAG_KINDS = ("inconsistency", "unsupported", "policy", "other")
_KIND_WORDS = {
    "inconsisten": "inconsistency",
    "contradict": "inconsistency",
    "unsupported": "unsupported",
    "citation": "unsupported",
    "evidence": "unsupported",
    "uncited": "unsupported",
    "claim": "unsupported",
    "policy": "policy",
    "safety": "policy",
    "legal": "policy",
    "privacy": "policy",
}


@dataclass(frozen=True)
class EditResult:
    """The outcome of one proposed edit."""

    index: int  # 1-based position in the reviewer's list
    find: str
    replace: str
    reason: str
    applied: bool
    why_not: str = ""  # "not found", "ambiguous: found 3 times", "empty find text", "no change"

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.index,
            "find": self.find,
            "replace": self.replace,
            "reason": self.reason,
            "applied": self.applied,
            "why_not": self.why_not,
        }


def _loose_pattern(find: str) -> re.Pattern[str]:
    words = find.split()
    return re.compile(r"\s+".join(re.escape(w) for w in words))


def apply_edits(document: str, edits: list[dict[str, str]]) -> tuple[str, list[EditResult]]:
    """Apply ``edits`` ([{"find", "replace", "reason"}], in order) to ``document``.

    Returns (the new document, one EditResult per edit). An edit applies only where its find text is
    found exactly once in the document as it stands after the earlier edits (exactly, or else with
    whitespace runs treated as equal); otherwise it is reported and the document is left as it was.
    """
    results: list[EditResult] = []
    text = document
    for index, edit in enumerate(edits, start=1):
        find = str(edit.get("find") or "")
        replace = str(edit.get("replace") or "")
        reason = str(edit.get("reason") or "")

        def report(
            applied: bool, why_not: str = "", *, _i: int = index, _f: str = find, _r: str = replace, _why: str = reason
        ) -> None:
            results.append(EditResult(_i, _f, _r, _why, applied, why_not))

        if not find.strip():
            report(False, "empty find text")
            continue
        if find == replace:
            report(False, "no change")
            continue
        count = text.count(find)
        if count == 1:
            text = text.replace(find, replace, 1)
            report(True)
            continue
        if count > 1:
            report(False, f"ambiguous: found {count} times")
            continue
        matches = list(_loose_pattern(find).finditer(text))
        if len(matches) == 1:
            match = matches[0]
            text = text[: match.start()] + replace + text[match.end() :]
            report(True)
        elif matches:
            report(False, f"ambiguous: found {len(matches)} times")
        else:
            report(False, "not found")
    return text, results


# --- parsing -------------------------------------------------------------------------------------


def _clip(value: Any) -> str:
    if value is None:
        return ""
    return str(value)[:MAX_FIELD]


def _tagged(text: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S | re.I)
    return match.group(1) if match else None


def _json_list(block: str, keys: tuple[str, ...]) -> list[Any] | None:
    value = try_load(block.strip())
    values = [value] if value is not None else json_candidates(block)
    for value in values:
        if isinstance(value, dict):
            for key in keys:
                found = value.get(key)
                if isinstance(found, list):
                    return found
        if isinstance(value, list):
            return value
    return None


def parse_edits(text: str) -> tuple[list[dict[str, str]], str]:
    """The reviewer's <edits> as [{"find", "replace", "reason"}] and the tier (json / text / none)."""
    block = _tagged(text, "edits")
    if block is None:
        return [], "none"
    items = _json_list(block, ("edits", "items", "changes"))
    if items is not None:
        edits = []
        for item in items[:MAX_EDITS]:
            if not isinstance(item, dict):
                continue
            find = item.get("find", item.get("old", item.get("original")))
            replace = item.get("replace", item.get("new", item.get("replacement", "")))
            if find is None:
                continue
            edits.append({"find": _clip(find), "replace": _clip(replace), "reason": _clip(item.get("reason", ""))})
        return edits, "json"
    # Text: FIND: ... / REPLACE: ... / REASON: ... groups.
    edits = []
    pattern = re.compile(
        r"find\s*:\s*(?P<find>.+?)\s*\n\s*replace(?:\s*with)?\s*:\s*(?P<replace>.*?)\s*(?:\n\s*reason\s*:\s*(?P<reason>.*?))?\s*(?=\n\s*find\s*:|\Z)",
        re.S | re.I,
    )
    for match in pattern.finditer(block):
        edits.append(
            {
                "find": _clip(match.group("find").strip().strip('"“”')),
                "replace": _clip(match.group("replace").strip().strip('"“”')),
                "reason": _clip((match.group("reason") or "").strip()),
            }
        )
        if len(edits) >= MAX_EDITS:
            break
    return edits, ("text" if edits else "none")


def _flag_kind(value: Any) -> str:
    word = str(value or "").lower()
    if word in FLAG_KINDS:
        return word
    for stem, kind in _KIND_WORDS.items():
        if stem in word:
            return kind
    return "other"


def parse_flags(text: str) -> tuple[list[dict[str, str]], str]:
    """The reviewer's <flags> as [{"kind": inconsistency|unsupported|policy|other, "passage", "note"}]."""
    block = _tagged(text, "flags")
    if block is None:
        return [], "none"
    items = _json_list(block, ("flags", "items", "problems"))
    if items is not None:
        flags = [
            {
                "kind": _flag_kind(item.get("kind") or item.get("type")),
                "passage": _clip(item.get("passage") or item.get("quote") or ""),
                "note": _clip(item.get("note") or item.get("problem") or item.get("reason") or ""),
            }
            for item in items[:MAX_EDITS]
            if isinstance(item, dict)
        ]
        return flags, "json"
    flags = []
    for line in block.splitlines():
        line = line.strip().lstrip("-*• ").strip()
        if not line:
            continue
        kind, _, note = line.partition(":")
        flags.append({"kind": _flag_kind(kind), "passage": "", "note": _clip(note.strip() or line)})
    return flags[:MAX_EDITS], ("text" if flags else "none")


def parse_sections(text: str) -> tuple[list[dict[str, Any]], str]:
    """The planner's <sections> as [{"title", "goal", "sources": [n...]}] and the tier."""
    block = _tagged(text, "sections")
    if block is not None:
        items = _json_list(block, ("sections", "outline", "items"))
        if items is not None:
            sections = []
            for item in items[:MAX_EDITS]:
                if isinstance(item, dict) and (item.get("title") or item.get("heading")):
                    sources = item.get("sources") or item.get("citations") or []
                    sections.append(
                        {
                            "title": _clip(item.get("title") or item.get("heading"))[:200],
                            "goal": _clip(item.get("goal") or item.get("purpose") or ""),
                            "sources": [int(s) for s in sources if str(s).isdigit()][:20]
                            if isinstance(sources, list)
                            else [],
                        }
                    )
            return sections, "json"
    # Text: numbered lines "1. Title: goal" / "1. Title - goal".
    sections = []
    for match in re.finditer(r"^\s*\d{1,2}[.)]\s+(.+?)\s*$", text, re.M):
        parts = re.split(r"\s+[—–-]\s+|:\s+", match.group(1), maxsplit=1)
        title, goal = parts[0], (parts[1] if len(parts) > 1 else "")
        sections.append({"title": _clip(title.strip("*_ "))[:200], "goal": _clip(goal), "sources": []})
    return sections[:MAX_EDITS], ("text" if sections else "none")


_CITATION_RE = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")


def citations_in(text: str) -> list[int]:
    """The source numbers cited as [n] or [n, m] in ``text``, unique, in order of first use."""
    seen: list[int] = []
    for match in _CITATION_RE.finditer(text or ""):
        for number in re.split(r"[,;]", match.group(1)):
            value = int(number.strip())
            if value not in seen:
                seen.append(value)
    return seen


def _section(text: str, word: str) -> str | None:
    """The text under the first Markdown heading containing ``word`` (to the next heading), or None."""
    match = re.search(rf"^#+\s*[^\n]*{word}[^\n]*\n(.*?)(?=^#+\s|\Z)", text or "", re.M | re.S | re.I)
    return match.group(1) if match else None


def parse_findings(text: str, heading: str = "finding") -> list[dict[str, Any]]:
    """Bullet points of a research summary as [{"text", "citations": [n...]}] (the structured summary).

    Reads the bullets under the heading containing ``heading`` ("## Findings", "## Gaps"); with no such
    heading and heading="finding", every bullet of the text.
    """
    section = _section(text, heading)
    if section is None:
        if heading != "finding":
            return []
        section = text or ""
    findings = []
    for match in re.finditer(r"^\s*[-*•]\s+(.+?)\s*$", section, re.M):
        line = match.group(1)
        findings.append({"text": _clip(line), "citations": citations_in(line)})
        if len(findings) >= MAX_EDITS:
            break
    return findings
