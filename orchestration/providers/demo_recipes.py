"""The demo provider's replies for the parallel flows' recipes (critique, synthesize, moderate).

Kept apart from demo.py on purpose: the demo provider answers every prompt recipe in the shape the
real prompts ask for, so a user without keys can run the editorial and roundtable presets and see
issues with severities, decisions and resolutions. Like the rest of the demo it is deterministic and
not a language model. Issues thin out round by round (round 1 has a high-severity one, round 2 none),
so the roundtable converges on "no high-severity issues left" in round 2.
"""

from __future__ import annotations

import json
import re

from orchestration.providers.base import ModelRequest

_ISSUES = [
    ("high", "The main claim is never stated outright.", "State the recommendation in the first paragraph."),
    ("medium", "The middle section has no concrete example.", "Add one worked example with numbers."),
    ("low", "Two sentences repeat the same point.", "Merge them into one."),
    ("medium", "The counter-argument is mentioned but not answered.", "Answer it in two sentences."),
    ("low", "The closing paragraph ends on a question.", "End on the recommendation instead."),
]
_IDS = re.compile(r"\[((?:E|I)\d{1,3})\]")


def _round(request: ModelRequest) -> int:
    return max(1, int(request.metadata.get("round") or 1))


def _first_sentence(request: ModelRequest) -> str:
    """A short passage to quote: the first sentence of the document under review."""
    match = re.search(r"<document>\s*(.*?)</document>", request.user, re.S)
    body = [
        line for line in (match.group(1) if match else "").splitlines() if line.strip() and not line.startswith("#")
    ]
    sentence = re.split(r"(?<=[.!?])\s", body[0])[0] if body else ""
    return sentence[:120]


def critique_issues(request: ModelRequest) -> list[dict]:
    """Round 1: one high, one medium, one low; round 2: medium and low; later: one low. Rotated per agent."""
    from orchestration.providers.demo import _rng

    round_number = _round(request)
    wanted = ["high", "medium", "low"] if round_number == 1 else ["medium", "low"] if round_number == 2 else ["low"]
    rng = _rng("critique", request.metadata.get("session_id", 0), request.metadata.get("agent_name", ""), round_number)
    passage = _first_sentence(request)
    issues = []
    for severity in wanted:
        severity_pool = [i for i in _ISSUES if i[0] == severity]
        _, problem, fix = rng.choice(severity_pool)
        issues.append({"severity": severity, "passage": passage, "problem": problem, "fix": fix})
    return issues


def _critique(request: ModelRequest) -> str:
    from orchestration.providers.demo import demo_evaluation

    issues = critique_issues(request)
    name = request.metadata.get("agent_name") or "This reviewer"
    comments = (
        f"{name} (demo reviewer, not a language model) read round {_round(request)}'s document. "
        f"It found {len(issues)} issue{'s' if len(issues) != 1 else ''} to fix."
    )
    if _round(request) % 2 == 1:
        block = "<issues>\n" + json.dumps(issues, indent=1) + "\n</issues>"
    else:  # the tolerant text format, as some models write it
        lines = [f'- [{i["severity"].upper()}] "{i["passage"]}": {i["problem"]} Fix: {i["fix"]}' for i in issues]
        block = "<issues>\n" + "\n".join(lines) + "\n</issues>"
    return f"{comments}\n\n{block}\n\n{demo_evaluation(request)}"


def _decisions(request: ModelRequest, kind: str) -> str:
    ids = list(dict.fromkeys(_IDS.findall(request.user)))
    items = []
    for index, ident in enumerate(ids):
        if kind == "decisions":
            taken = index % 3 != 2
            items.append(
                {
                    "id": ident,
                    "decision": "accepted" if taken else "rejected",
                    "reason": "It makes the draft clearer." if taken else "Another editor's edit covers it better.",
                }
            )
        else:
            low = "(low)" in request.user.split(f"[{ident}]", 1)[-1][:12]
            items.append(
                {
                    "id": ident,
                    "action": "declined" if low and index % 2 else "fixed",
                    "note": "Left as is: the wording is deliberate." if low and index % 2 else "Rewrote the passage.",
                }
            )
    return f"<{kind}>\n" + json.dumps(items, indent=1) + f"\n</{kind}>"


def _without_last_section(document: str) -> str:
    parts = document.rstrip().split("\n\n## ")
    return ("\n\n## ".join(parts[:-1]) + "\n") if len(parts) > 2 else document


def recipe_reply(request: ModelRequest) -> str | None:
    """The demo's reply for a flow recipe, or None to use the plain revise reply."""
    from orchestration.providers.demo import demo_document, demo_evaluation

    recipe = request.metadata.get("recipe") or "revise"
    if recipe == "critique":
        return _critique(request)
    if recipe == "synthesize":
        return demo_document(request) + "\n" + _decisions(request, "decisions") + "\n\n" + demo_evaluation(request)
    if recipe == "moderate":
        return demo_document(request) + "\n" + _decisions(request, "resolutions") + "\n\n" + demo_evaluation(request)
    if request.metadata.get("slot") in ("write", "draft"):
        # A first draft: one section short, so the synthesizer's or moderator's version visibly adds to it.
        return _without_last_section(demo_document(request)) + "\n" + demo_evaluation(request)
    return None
