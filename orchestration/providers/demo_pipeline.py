"""The offline demo's answers to the research -> plan -> build -> review pipeline (not a language model).

Deterministic and derived from the prompt: the numbered source passages (``<reference title="[n] ...">``),
the brief, the earlier stages' output (``<feedback from="Researcher">`` ...), the owner's settings line and
the current document. Honest about what it is: findings are sentences quoted from the passages, with the
passage's real number; the reviewer's edits quote the draft exactly, so they apply; its flags come from
plain checks (a claim without a citation, a citation to a number that is not a source).
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestration.providers.demo import (
    FILLERS,
    Inputs,
    _best_sentence,
    _evaluation,
    _paragraphs,
    _sentences,
    topic_of_brief,
)

_SOURCE_TITLE = re.compile(r"^\[(\d+)\]\s+(.*?), passage (\d+)(?: \((.*)\))?$")
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_CLAIM_WORDS = re.compile(r"\b(should|must|clearly|everyone|always|never|proves?|will)\b", re.I)
_SOFTER = {"always": "often", "never": "rarely"}
_OPENINGS = {
    "formal": "This {format} examines",
    "friendly": "Let's look at",
    "persuasive": "The evidence points one way on",
    "technical": "This {format} sets out the facts on",
    "neutral": "This {format} looks at",
}


def _sources(inputs: Inputs) -> list[tuple[int, str, str, str]]:
    """[(n, reference title, heading, passage text)] from the numbered references."""
    found = []
    for title, body in inputs.references:
        match = _SOURCE_TITLE.match(title)
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(4) or "", body))
    return found


def _feedback(inputs: Inputs, name: str) -> str:
    return next((text for who, text in inputs.feedback if who == name), "")


def _criteria_scores(inputs: Inputs, value: float) -> dict[str, float]:
    return {name: round(value, 1) for name in inputs.criteria}


def research_reply(inputs: Inputs) -> str:
    """A summary, findings quoting the passages with their numbers, and the brief's words nothing covers."""
    topic = topic_of_brief(inputs.brief)
    sources = _sources(inputs)
    findings = []
    for n, _title, _heading, text in sources[:6]:
        sentence = _best_sentence(text, topic).strip()
        if sentence:
            findings.append(f"- {sentence.rstrip('.')} [{n}].")
    corpus = " ".join(text.lower() for *_, text in sources)
    gaps = [k for k in topic.keywords if k not in corpus and k.rstrip("s") not in corpus][:3]
    summary = (
        f"The retriever found {len(sources)} passage{'s' if len(sources) != 1 else ''} for “{topic.title}”."
        if sources
        else f"No reference passage was available for “{topic.title}”: the findings below are empty."
    )
    parts = [
        "## Summary",
        summary + " The demo quotes the most relevant sentence of each; a language model would synthesise them.",
        "## Findings",
        "\n".join(findings) or "- None: there were no passages to cite.",
        "## Gaps",
        "\n".join(f"- No passage mentions “{word}”." for word in gaps) or "- None found by the demo's word matching.",
    ]
    coverage = 9.0 if sources and not gaps else 7.0 if sources else 3.0
    return "\n\n".join(parts) + "\n\n" + _evaluation(_criteria_scores(inputs, coverage), [summary], 1, force_json=True)


def _finding_lines(research: str) -> list[tuple[str, list[int]]]:
    lines = []
    for match in re.finditer(r"^\s*-\s+(.+?)\s*$", research, re.M):
        numbers = [int(x) for group in _CITATION.findall(match.group(1)) for x in re.split(r"\s*,\s*", group)]
        if numbers:
            lines.append((match.group(1), numbers))
    return lines


def outline_reply(inputs: Inputs) -> str:
    """Introduction, one section per source heading the findings come from, conclusion."""
    topic = topic_of_brief(inputs.brief)
    headings = {n: heading or title for n, title, heading, _ in _sources(inputs)}
    groups: dict[str, list[int]] = {}
    for _line, numbers in _finding_lines(_feedback(inputs, "Researcher")):
        key = headings.get(numbers[0]) or f"Source {numbers[0]}"
        groups.setdefault(key, [])
        groups[key] += [n for n in numbers if n not in groups[key]]
    sections: list[dict[str, Any]] = [
        {"title": "Introduction", "goal": f"Set out the question: {topic.title}", "sources": []}
    ]
    for heading, numbers in list(groups.items())[:4]:
        goal = f"Present what the sources say on {heading}"
        sections.append({"title": heading[:80], "goal": goal, "sources": numbers})
    sections.append({"title": "Conclusion", "goal": f"Answer the brief: {topic.claim}", "sources": []})
    body = (
        f"# {topic.title}\n\nThe outline follows the research: one section per topic the passages cover.\n\n"
        f"<sections>\n{json.dumps(sections, ensure_ascii=False, indent=1)}\n</sections>\n\n"
    )
    return body + _evaluation(_criteria_scores(inputs, 8.5), ["Outline built from the research."], 1, force_json=True)


def _settings(user: str) -> tuple[str, str, int]:
    match = re.search(r"format: (.+?); tone: (.+?); length: about ([\d,]+) words", user)
    if not match:
        return "article", "neutral", 800
    return match.group(1), match.group(2), int(match.group(3).replace(",", ""))


def _sections_of(outline: str) -> list[dict[str, Any]]:
    match = re.search(r"<sections>(.*?)</sections>", outline, re.S)
    try:
        value = json.loads(match.group(1)) if match else []
    except ValueError:
        value = []
    return [s for s in value if isinstance(s, dict) and s.get("title")]


def build_reply(inputs: Inputs, user: str) -> str:
    """The full draft from the outline and findings, in the owner's format and tone, cut to the length."""
    fmt, tone, words = _settings(user)
    if inputs.document and _feedback(inputs, "Reviewer"):
        document = _rebuild(inputs)
    else:
        document = _first_build(inputs, fmt, tone, words)
    count = len(document.split())
    note = f"Wrote {count} words ({fmt}, {tone}); the owner asked for about {words}."
    return document.rstrip() + "\n\n" + _evaluation(_criteria_scores(inputs, 8.0), [note], 1, force_json=True)


def _first_build(inputs: Inputs, fmt: str, tone: str, words: int) -> str:
    topic = topic_of_brief(inputs.brief)
    findings = _finding_lines(_feedback(inputs, "Researcher"))
    by_source = {numbers[0]: line for line, numbers in findings}
    sections = _sections_of(_feedback(inputs, "Planner")) or [{"title": "Introduction"}, {"title": "Conclusion"}]
    opening = _OPENINGS.get(tone, _OPENINGS["neutral"]).format(format=fmt)
    lines = [f"# {topic.title}"]
    if fmt == "memo":
        lines.append(f"**To:** Readers  \n**From:** {inputs.agent_name}  \n**Subject:** {topic.title}")
    for section in sections:
        title = str(section["title"])
        if title == "Introduction" and fmt == "report":
            title = "Executive summary"
        lines.append(f"## {title}")
        if section is sections[0]:
            # A filler phrase the reviewer will cut: the demo's drafts have weaknesses to show the review working.
            lines.append(f"{opening} {topic.subject}. It is worth noting that the sources below agree on the basics.")
        elif section is sections[-1]:
            lines.append(f"In short, {topic.claim}. This will always pay off.")
        else:
            cited = [by_source[n] for n in section.get("sources") or [] if n in by_source]
            lines.append(" ".join(line.strip() for line in cited) or str(section.get("goal") or ""))
    document = "\n\n".join(lines)
    # Keep to the asked length: drop the last sentences of the body sections, never the structure.
    while len(document.split()) > words and len(lines) > 3:
        longest = max(range(1, len(lines) - 1), key=lambda i: len(lines[i]) if not lines[i].startswith("#") else 0)
        sentences = _sentences(lines[longest])
        if len(sentences) <= 1:
            break
        lines[longest] = " ".join(sentences[:-1])
        document = "\n\n".join(lines)
    return document + "\n"


def _rebuild(inputs: Inputs) -> str:
    """Fix the review's unsupported-claim flags: cite the best-matching source after the flagged sentence."""
    document = inputs.document
    review = _feedback(inputs, "Reviewer")
    sources = _sources(inputs)
    for flagged in re.findall(r"^- \[unsupported\] “(.+?)”:", review, re.M):
        # The review's own edits may have changed the flagged sentence already (the merged version).
        quote = flagged if flagged in document else softened(flagged)
        if quote in document and sources and not _CITATION.search(quote):
            words = set(re.findall(r"[a-z]{4,}", quote.lower()))
            best = max(sources, key=lambda s: (len(words & set(re.findall(r"[a-z]{4,}", s[3].lower()))), -s[0]))
            cited = quote.rstrip(".") + f" [{best[0]}]."
            document = document.replace(quote, cited, 1)
    return document


def softened(sentence: str) -> str:
    """The sentence without the demo's filler phrases and with absolute words softened."""
    fixed = sentence
    for filler, replacement in FILLERS:
        fixed = re.sub(re.escape(filler), replacement, fixed, flags=re.I)
    for word, softer in _SOFTER.items():
        fixed = re.sub(rf"\b{word}\b", softer, fixed)
    return fixed[:1].upper() + fixed[1:]


def review_reply(inputs: Inputs) -> str:
    """Flags from plain checks, edits that quote the draft exactly, and scores from what it found."""
    document = inputs.document
    known = {n for n, *_ in _sources(inputs)}
    flags, edits = [], []
    for paragraph in _paragraphs(document):
        if paragraph.lstrip().startswith(("#", "**To:**")):
            continue
        for sentence in _sentences(paragraph):
            numbers = [int(x) for group in _CITATION.findall(sentence) for x in re.split(r"\s*,\s*", group)]
            unknown = [n for n in numbers if n not in known]
            if unknown:
                note = f"Cites [{unknown[0]}], which is not a source."
                flags.append({"kind": "unsupported", "passage": sentence, "note": note})
            elif not numbers and _CLAIM_WORDS.search(sentence):
                flags.append({"kind": "unsupported", "passage": sentence, "note": "A claim with no cited source."})
            fixed = softened(sentence)
            if fixed != sentence and document.count(sentence) == 1:
                edits.append({"find": sentence, "replace": fixed, "reason": "Cut filler words and overstatement."})
    unsupported = sum(1 for f in flags if f["kind"] == "unsupported")
    scores = {}
    for name in inputs.criteria:
        lowered = name.lower()
        penalty = 1.5 * unsupported if re.search(r"evidence|accura|support|source|citation|fact", lowered) else 0.0
        penalty += 1.0 * len(edits) if re.search(r"clar|style|tone|concis|language", lowered) else 0.0
        if not re.search(r"evidence|accura|support|source|citation|fact|clar|style|tone|concis|language", lowered):
            penalty = 0.5 * (unsupported + len(edits))
        scores[name] = round(max(2.0, 9.4 - penalty), 1)
    comments = (
        f"The draft has {len(flags)} flagged problem{'s' if len(flags) != 1 else ''} and "
        f"{len(edits)} wording fix{'es' if len(edits) != 1 else ''} the demo's plain checks found."
    )
    body = (
        f"## Comments\n\n{comments}\n\n"
        f"<flags>\n{json.dumps(flags, ensure_ascii=False, indent=1)}\n</flags>\n\n"
        f"<edits>\n{json.dumps(edits, ensure_ascii=False, indent=1)}\n</edits>\n\n"
    )
    return body + _evaluation(scores, [comments], 1, force_json=True)
