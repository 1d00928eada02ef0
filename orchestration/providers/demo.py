"""The offline demo provider: an honest, deterministic simulation of a writing team (not a language model).

It is what a newcomer without API keys runs first, so it must show what the product does. It reads the
same prompt a real model gets (the brief, the reference documents, the current document, teammates'
feedback and the owner's note, in the tags `orchestration.prompts` writes) and answers with fixed rules:

* A **writer** with no draft writes one around the brief's topic (a title from the brief, the thesis it
  asks for, one paragraph per reference quoting its most relevant sentence). With a draft (a starting
  document, an earlier turn, a human edit) it keeps the text and applies the feedback it was given,
  highest severity first, at most `FIXES_PER_TURN` items a turn, so a run improves visibly round by round.
* An **editor** fixes obvious wording itself (filler phrases) and reports structure, clarity and evidence
  problems; a **critic** (reviewer, fact-checker, moderator...) reports argument and evidence problems.
  Every issue quotes a real passage of the current document and has a severity (high / medium / low).
* Scores come from the problems still in the document, so they rise as feedback is applied; once nothing
  is left to fix the document holds still and convergence can trigger.
* The owner's note is followed when it is one of the forms the demo understands ("add a section about
  X", "shorten"); otherwise the demo says plainly that it cannot interpret free text.

The flows' other recipes get answers in their shapes: `critique` (no document; issues as JSON with
severities), `synthesize` / `moderate` (the document with the critiques applied and a list of what was
taken), `plan` (a JSON task list), `route` (a JSON handoff) and `suggest_team` (a JSON team proposal
derived from the brief and goal, among the flows and models the prompt allows). The recipe comes from
``request.metadata["recipe"]`` when the engine sends it, otherwise from the prompt's wording.

Evaluations rotate through the formats `orchestration.evaluation` parses (round % 3 == 1 -> JSON,
2 -> "Criterion: 7.5/10" lines, 0 -> bare numbers) for the writer's self-evaluation, so every parser
tier is exercised offline; critiques are always JSON, because their issues are structured.
Everything is a pure function of the request: the same prompt always gives the same reply.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestration.provider_table import DEMO, PROVIDER_LABELS
from orchestration.providers.base import BaseAdapter, ModelRequest, StreamEnd, StreamEvent, TextDelta, ToolCall, Usage

DEMO_LABEL = PROVIDER_LABELS[DEMO]  # the provider table's label
WORDS_PER_CHUNK = 3
TOKENS_PER_WORD = 1 / 0.75  # the usual rule of thumb for English
FIXES_PER_TURN = 1  # feedback items a writer applies per turn: progress is visible over several rounds
LONG_SENTENCE_WORDS = 32
SCORE_CEILING = 9.6
SCORE_FLOOR = 2.0
PENALTY = {"high": 3.5, "medium": 2.5, "low": 1.0}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}

FILLERS = [
    ("in order to ", "to "),
    ("it is worth noting that ", ""),
    ("very ", ""),
    ("really ", ""),
    ("actually ", ""),
    ("basically ", ""),
]
STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        """a an the and or but if of to in on for with about from into over under by as at is are was were be been
    being it its this that these those should would could can will may might must do does did not no yes we you
    they their there here what which who whom whose how why when where whether than then so such very more most
    less least your our my his her them us i me write draft produce compose create prepare essay article post
    piece short long brief words word about using use clear sections section end recommendation argue arguing
    argues explain explaining describe describing explore exploring make keep around please also each every""",
    )
)


# --------------------------------------------------------------------------------------------------
# Reading the prompt
# --------------------------------------------------------------------------------------------------


def _undefuse(text: str) -> str:
    """`prompts._defuse` turns "<" before its own tag names into "&lt;"; show the text as the user wrote it."""
    return re.sub(r"&lt;(?=\s*/?\s*(?:brief|reference|document|feedback|user_note|critique|candidate)\b)", "<", text)


def _tag(text: str, name: str) -> str | None:
    match = re.search(rf"<{name}>\n?(.*?)\n?</{name}>", text, re.S)
    return _undefuse(match.group(1)) if match else None


@dataclass
class Inputs:
    """What the demo reads from one request."""

    brief: str
    references: list[tuple[str, str]]
    document: str
    feedback: list[tuple[str, str]]  # (from, text), in prompt order
    note: str
    round: int
    agent_name: str
    role: str
    criteria: list[str]
    recipe: str
    slot: str = ""
    task: str = ""
    critiques: list[tuple[str, str]] = field(default_factory=list)  # (from, text) for synthesize/moderate


def _detect_recipe(request: ModelRequest) -> str:
    recipe = str(request.metadata.get("recipe") or "").strip().lower()
    if recipe:
        return recipe
    text = (request.system + "\n" + request.user).lower()
    if re.search(r"do not (?:return|rewrite|write) (?:the|a) (?:complete |whole |full )?document", text):
        return "critique"
    if '"tasks"' in text or "task graph" in text:
        return "plan"
    if '"handoff"' in text or "hand the conversation" in text:
        return "route"
    return "revise"


def read_inputs(request: ModelRequest) -> Inputs:
    """Parse the prompt built by `orchestration.prompts` (and the metadata the engine adds)."""
    meta = request.metadata
    whole = request.system + "\n" + request.user
    brief = _tag(whole, "brief")
    if brief is None:
        brief = str(meta.get("brief") or "")
    if not brief.strip():
        lines = [line.strip() for line in request.user.splitlines() if line.strip()]
        marked = [line for line in lines if re.match(r"^#*\s*brief\s*:", line, re.IGNORECASE)]
        brief = re.sub(r"^#*\s*brief\s*:\s*", "", marked[0], flags=re.IGNORECASE) if marked else "\n".join(lines[:1])
    references = [
        (html.unescape(title), _undefuse(body).strip())
        for title, body in re.findall(r'<reference title="(.*?)">\n?(.*?)\n?</reference>', whole, re.S)
    ]
    feedback = [
        (html.unescape(name), _undefuse(body).strip())
        for name, body in re.findall(r'<feedback from="(.*?)">\n?(.*?)\n?</feedback>', request.user, re.S)
    ]
    critiques = [
        (html.unescape(name), _undefuse(body).strip())
        for name, body in re.findall(r'<(?:critique|review|notes) from="(.*?)"[^>]*>\n?(.*?)\n?</', request.user, re.S)
    ]
    role = str(meta.get("role") or "")
    if not role:
        match = re.search(r"You are .*?, the (.+?) of this team\.", request.system)
        role = match.group(1) if match else "writer"
    round_match = re.search(r"round (\d+) of", request.user)
    round_number = int(meta.get("round") or (round_match.group(1) if round_match else 1))
    return Inputs(
        brief=brief.strip(),
        references=[r for r in references if r[1]],
        document=(_tag(request.user, "document") or "").strip(),
        feedback=feedback,
        note=(_tag(request.user, "user_note") or "").strip(),
        round=max(1, round_number),
        agent_name=str(meta.get("agent_name") or "the demo agent"),
        role=role.strip().lower() or "writer",
        criteria=[str(c) for c in (meta.get("criteria") or [])] or ["Quality"],
        recipe=_detect_recipe(request),
        slot=str(meta.get("slot") or ""),
        task=str(meta.get("task") or ""),
        critiques=critiques,
    )


# --------------------------------------------------------------------------------------------------
# The topic: what the brief asks for
# --------------------------------------------------------------------------------------------------

_INSTRUCTION = re.compile(
    r"^(?:please\s+)?(?:write|draft|produce|compose|create|prepare|give|make)\b.*?"
    r"\b(?:arguing|argue|explaining|explain|describing|describe|exploring|explore|about|on|that|whether|for)\b\s*",
    re.IGNORECASE,
)
_TRAILING_QUALIFIER = re.compile(
    r"\s*(?:,|\bin\b|\bwithin\b)\s*(?:about\s+|around\s+|under\s+)?(?:\d[\d,]*\s+words|an?\s+(?:short|brief|long)?\s*"
    r"(?:essay|article|post|piece|memo|report)).*$",
    re.IGNORECASE,
)


@dataclass
class Topic:
    title: str  # the document's heading
    subject: str  # a noun phrase for sentences ("protected bike lanes")
    claim: str  # a clause the piece argues ("cities should replace car lanes with protected bike lanes")
    keywords: list[str]


def _first_sentence(text: str) -> str:
    text = re.sub(r"\([^)]*\)", "", text)  # "(about 600 words)"
    match = re.match(r"(.+?[.!?])(?:\s|$)", text.strip(), re.S)
    return (match.group(1) if match else text).strip().rstrip(".!?").strip()


def topic_of_brief(brief: str) -> Topic:
    """Derive a title, a subject and a claim from the brief with a few plain rules (no language model)."""
    lines = [line.strip() for line in brief.splitlines() if line.strip()]
    heading = re.sub(r"^#+\s*", "", lines[0]) if lines and lines[0].startswith("#") else ""
    body = " ".join(lines[1:] if heading else lines)
    sentence = _first_sentence(body) if body else heading
    lowered = sentence
    whether = re.search(r"\bwhether\s+(.+)", lowered, re.IGNORECASE)
    that = re.search(r"\b(?:argu\w*|claim\w*|show\w*)\s+that\s+(.+)", lowered, re.IGNORECASE)
    argue_for = re.search(r"\bargu\w*\s+(?:for|in favou?r of)\s+(.+)", lowered, re.IGNORECASE)
    stripped = _INSTRUCTION.sub("", sentence).strip()
    clause = ""
    if whether:
        clause = whether.group(1)
    elif that:
        clause = that.group(1)
    clause = _TRAILING_QUALIFIER.sub("", clause).strip(" ,;:")
    subject_text = _TRAILING_QUALIFIER.sub("", argue_for.group(1) if argue_for else stripped).strip(" ,;:")
    if clause:
        # "cities should replace car lanes with protected bike lanes" -> subject "protected bike lanes"
        tail = re.split(r"\b(?:with|for|of|on|about|to)\b", clause)
        subject = tail[-1].strip() if len(tail) > 1 and len(tail[-1].split()) <= 6 else clause
        claim = clause
    else:
        subject = subject_text or "the brief"
        claim = f"{_inline(subject)} {_verb(subject, 'deserve')} support"
    subject = subject.strip().rstrip(".") or "the brief"
    if heading:
        title = heading
    elif whether and (parts := re.match(r"^(\w+(?:\s+\w+)?)\s+(should|could|can|must|will|would)\s+(.+)$", clause)):
        title = f"{parts.group(2).capitalize()} {parts.group(1)} {parts.group(3)}?"
    elif lines and not _INSTRUCTION.match(sentence):
        title = sentence
    else:
        title = subject[:1].upper() + subject[1:]
    title = title[:90].rstrip()
    keywords = []
    for word in re.findall(r"[A-Za-z][A-Za-z'-]{3,}", brief.lower()):
        if word not in STOPWORDS and word not in keywords:
            keywords.append(word)
    return Topic(title=title, subject=subject, claim=claim, keywords=keywords[:8])


def topic_of(request: ModelRequest) -> str:
    """The document title the demo gives the brief of `request`."""
    return topic_of_brief(read_inputs(request).brief).title


# --------------------------------------------------------------------------------------------------
# Documents: sentences, paragraphs, sections
# --------------------------------------------------------------------------------------------------


def _sentences(paragraph: str) -> list[str]:
    # A sentence ends at . ! or ? (and a closing quote or bracket) followed by space and a capital.
    found = re.findall(r".+?(?:[.!?][\"”’)]?(?=\s+[A-Z\"“(])|$)", paragraph.strip(), re.S)
    return [s.strip() for s in found if s.strip()]


def _paragraphs(document: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", document.strip()) if p.strip()]


def _is_prose(paragraph: str) -> bool:
    stripped = paragraph.lstrip()
    return bool(stripped) and not stripped.startswith(("#", ">", "-", "*", "|", "```", "1."))


def _headings(document: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{2,6}\s+(.+)$", document, re.M)]


def _best_sentence(reference: str, topic: Topic) -> str:
    """The reference sentence sharing most words with the brief (the first one on a tie)."""
    candidates = [s.strip() for p in _paragraphs(reference) if _is_prose(p) for s in _sentences(p)]
    candidates = [s for s in candidates if 4 <= len(s.split()) <= 45] or [reference.strip().split("\n")[0][:200]]

    def overlap(sentence: str) -> int:
        words = set(re.findall(r"[a-z'-]+", sentence.lower()))
        return sum(1 for k in topic.keywords if k in words or k.rstrip("s") in words)

    return max(candidates, key=lambda s: (overlap(s), -candidates.index(s)))


def _verb(subject: str, verb: str) -> str:
    """Agree `verb` with the subject's head noun: "bike lanes deserve", "tidal energy in harbours deserves"."""
    head = re.split(r"\s+(?:in|of|for|on|with|to|at|from)\s+", subject.strip(), maxsplit=1)[0].split()[-1:]
    word = head[0].lower() if head else ""
    plural = word.endswith("s") and not word.endswith(("ss", "us", "is"))
    return verb if plural else verb + "s"


def _inline(phrase: str) -> str:
    """Lower-case a phrase's first letter mid-sentence, unless it starts an acronym ("API design")."""
    return phrase if phrase[1:2].isupper() else phrase[:1].lower() + phrase[1:]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def draft_document(inputs: Inputs) -> str:
    """The first draft: a title, an introduction with the thesis, what the references say, the case, an ending.

    It deliberately reads like a first draft (wordy phrases, one overlong sentence, no objections), so
    the editors have something real to point at and the revisions something to apply.
    """
    topic = topic_of_brief(inputs.brief)
    subject = _inline(topic.subject)
    parts = [f"# {topic.title}", "## Introduction"]
    parts.append(
        f"Debates about {subject} are very often settled by habit rather than by evidence. "
        f"This draft argues that {topic.claim}."
    )
    if inputs.references:
        parts.append("## What the sources say")
        for title, content in inputs.references[:3]:
            parts.append(f"{title} is the starting point here: “{_best_sentence(content, topic)}”")
    parts.append("## The case")
    parts.append(
        f"It is worth noting that decisions about {subject} change how people live, work and spend their money, and "
        "the people who would feel those changes first are the ones whose daily routines, costs and safety depend "
        "on the decisions that are made about them, which is why the details matter so much. "
        f"In order to judge {subject} fairly, we should compare what the change costs with what it returns. "
        "Everyone gains when such decisions follow the evidence."
    )
    if re.search(r"recommend", inputs.brief, re.IGNORECASE):
        parts.append("## Conclusion")
        parts.append(f"On balance, {topic.claim}.")
    else:
        parts.append("## Conclusion")
        parts.append(f"{_cap(subject)} {_verb(topic.subject, 'deserve')} a careful, evidence-led decision.")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Checks: what editors and critics find, and how a writer fixes it
# --------------------------------------------------------------------------------------------------


@dataclass
class Issue:
    kind: str
    severity: str  # high | medium | low
    criterion: str  # clarity | evidence | argument | structure
    quote: str  # a passage of the current document ("" for whole-document issues)
    problem: str
    suggestion: str

    def line(self) -> str:
        where = f"“{self.quote}” — " if self.quote else ""
        return f"[{self.severity}] {where}{self.problem} {self.suggestion}".strip()

    def as_json(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "quote": self.quote,
            "problem": self.problem,
            "suggestion": self.suggestion,
            "criterion": self.criterion,
        }


def _short(sentence: str, words: int = 14) -> str:
    parts = sentence.split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


_OVERCLAIM = r"Everyone|everyone|always|never|nobody|Nobody"
_SOFTER = {
    "Everyone": "Most people",
    "everyone": "most people",
    "always": "usually",
    "never": "rarely",
    "nobody": "few people",
    "Nobody": "Few people",
}
_FRAME_SECTIONS = re.compile(r"intro|overview|objection|conclusion|recommend|summary|next steps|source", re.I)


def _claim_paragraphs(document: str) -> list[str]:
    """Prose paragraphs of the body (not the introduction, the sources, objections or the ending)."""
    claims, heading, seen_first = [], "", False
    for paragraph in _paragraphs(document):
        if paragraph.lstrip().startswith("#"):
            heading = paragraph.lstrip("# ").strip()
            continue
        if not _is_prose(paragraph):
            continue
        if not seen_first:
            seen_first = True  # the opening paragraph frames; it is not a claim to source
            continue
        if not _FRAME_SECTIONS.search(heading) and not paragraph.startswith("For example"):
            claims.append(paragraph)
    return claims


def _body_sentences(document: str) -> list[str]:
    return [s for p in _paragraphs(document) if _is_prose(p) for s in _sentences(p)]


@dataclass(frozen=True)
class _Reading:
    """What `find_issues` reads of a document once: its prose, sentences and headings."""

    document: str
    inputs: Inputs
    role_family: str
    sentences: list[str]
    paragraphs: list[str]
    headings: list[str]
    lower: str


def find_issues(document: str, inputs: Inputs, *, role_family: str) -> list[Issue]:
    """The problems a role notices in `document`, most severe first. Deterministic and finite:
    each kind of problem has a fix (`apply_issue`) that removes it."""
    reading = _Reading(
        document=document,
        inputs=inputs,
        role_family=role_family,
        sentences=_body_sentences(document),
        paragraphs=[p for p in _paragraphs(document) if _is_prose(p)],
        headings=[h.lower() for h in _headings(document)],
        lower=document.lower(),
    )
    issues = [
        *_argument_issues(reading),
        *_evidence_issues(reading),
        *_ending_and_claim_issues(reading),
        *_clarity_issues(reading),
    ]
    issues.sort(key=lambda issue: SEVERITY_ORDER[issue.severity])
    return issues


def _argument_issues(r: _Reading) -> list[Issue]:
    """Argument: a thesis up front, and an answer to the obvious objection."""
    issues: list[Issue] = []
    if r.paragraphs and not re.search(r"\b(argues?|should|must|recommend|thesis)\b", r.paragraphs[0], re.IGNORECASE):
        issues.append(
            Issue(
                "thesis",
                "medium",
                "argument",
                _short(_sentences(r.paragraphs[0])[0]),
                "The opening does not say what the piece argues.",
                "State the thesis in the first paragraph.",
            )
        )
    if r.document.strip() and not re.search(
        r"\b(objection|critics?|counter-?argument|opponents?|on the other hand|however)\b", r.lower
    ):
        thesis = next((s for s in r.sentences if re.search(r"\bargues?\b", s)), r.sentences[0] if r.sentences else "")
        issues.append(
            Issue(
                "objection",
                "high" if r.role_family == "critic" else "medium",
                "argument",
                _short(thesis),
                "The argument never meets the strongest objection, so a sceptical reader is not persuaded.",
                "Add a section that states the best counter-argument and answers it.",
            )
        )
    return issues


def _evidence_issues(r: _Reading) -> list[Issue]:
    """Evidence: a claim paragraph of the body with no source (when sources exist), and no concrete example."""
    issues: list[Issue] = []
    if r.inputs.references:
        cited = [title.lower() for title, _ in r.inputs.references]
        for paragraph in _claim_paragraphs(r.document):
            if "“" in paragraph or '"' in paragraph or any(t in paragraph.lower() for t in cited):
                continue
            first = _sentences(paragraph)[0]
            if len(first.split()) >= 8:
                issues.append(
                    Issue(
                        "evidence",
                        "high",
                        "evidence",
                        _short(first),
                        "This claim has no support, although the references have some.",
                        f"Quote “{r.inputs.references[0][0]}” here.",
                    )
                )
                break
    elif r.document.strip() and r.role_family == "critic":
        issues.append(
            Issue(
                "no_sources",
                "low",
                "evidence",
                "",
                "No reference documents were given, so nothing here is checked against a source.",
                "Add references to the session if the claims must be supported.",
            )
        )
    # One concrete example makes a case checkable.
    if r.paragraphs and not re.search(r"\b(for example|for instance|consider|such as)\b", r.lower):
        body = _claim_paragraphs(r.document) or r.paragraphs
        issues.append(
            Issue(
                "example",
                "medium",
                "evidence",
                _short(_sentences(body[0])[0]),
                "The case stays abstract: there is not one concrete example.",
                "Add an example a reader can picture.",
            )
        )
    return issues


def _ending_and_claim_issues(r: _Reading) -> list[Issue]:
    """Structure: the ending the brief asks for. Argument: sweeping claims no evidence can carry (a critic's eye)."""
    issues: list[Issue] = []
    if re.search(r"recommend", r.inputs.brief, re.IGNORECASE) and not any("recommend" in h for h in r.headings):
        last = r.paragraphs[-1] if r.paragraphs else ""
        issues.append(
            Issue(
                "ending",
                "high",  # the brief asks for it: the piece fails its purpose without it
                "structure",
                _short(_sentences(last)[0]) if last else "",
                "The brief asks for a recommendation, but the piece ends without one.",
                "End with a section titled Recommendation that says what to do.",
            )
        )
    if r.role_family == "critic":
        match = re.search(rf"[^.!?\n]*\b(?:{_OVERCLAIM})\b[^.!?\n]*[.!?]?", r.document)
        if match:
            issues.append(
                Issue(
                    "overclaim",
                    "medium",
                    "argument",
                    _short(match.group(0).strip()),
                    "This sweeping claim is easy to refute with one counter-example.",
                    "Qualify it (most, often) or support it.",
                )
            )
    return issues


def _clarity_issues(r: _Reading) -> list[Issue]:
    """Clarity: the first overlong sentence, and (for an editor) the first filler phrase."""
    issues: list[Issue] = []
    for sentence in r.sentences:
        if len(sentence.split()) > LONG_SENTENCE_WORDS:
            issues.append(
                Issue(
                    "long_sentence",
                    "medium" if r.role_family == "editor" else "low",
                    "clarity",
                    _short(sentence),
                    f"This sentence runs to {len(sentence.split())} words and loses the reader.",
                    "Split it in two.",
                )
            )
            break
    for phrase, _ in FILLERS:
        match = re.search(rf"[^.!?\n]*\b{re.escape(phrase.strip())}\b[^.!?\n]*[.!?]?", r.document, re.IGNORECASE)
        if match and r.role_family == "editor":
            issues.append(
                Issue(
                    "filler",
                    "low",
                    "clarity",
                    _short(match.group(0).strip()),
                    f"“{phrase.strip()}” adds nothing.",
                    "Cut it.",
                )
            )
            break
    return issues


def _issue_kind(text: str) -> str | None:
    """Which kind of problem a feedback line describes (also works on a real model's wording)."""
    lower = text.lower()
    for kind, pattern in (
        ("objection", r"objection|counter-?argument|sceptic|skeptic|opposing"),
        ("evidence", r"no support|unsupported|evidence|cite|source|quote"),
        ("ending", r"recommendation|ending|ends without"),
        ("example", r"concrete example|stays abstract|an example"),
        ("thesis", r"thesis|what the piece argues|main claim"),
        ("long_sentence", r"sentence runs|long sentence|split it|overlong"),
        ("filler", r"adds nothing|filler|wordy|cut it"),
        ("overclaim", r"sweeping|overclaim|qualify it|generali[sz]ation"),
    ):
        if re.search(pattern, lower):
            return kind
    return None


def _feedback_items(feedback: list[tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(severity, kind, quote, from) for each recognisable item of teammates' feedback, most severe first."""
    items = []
    for name, text in feedback:
        lines = [line for line in re.split(r"\n+", text) if line.strip()]
        # Marked issues ("[high] ...") when there are any: the other lines report what was already done.
        marked = [line for line in lines if _MARKED.search(line)]
        for line in marked or lines:
            kind = _issue_kind(line)
            if kind is None:
                continue
            severity = re.search(r"\b(high|medium|low)\b", line, re.IGNORECASE)
            quote = re.search(r"[“\"](.+?)[”\"]", line)
            items.append(
                ((severity.group(1).lower() if severity else "medium"), kind, quote.group(1) if quote else "", name)
            )
    items.sort(key=lambda item: SEVERITY_ORDER[item[0]])
    seen: set[str] = set()
    unique = []
    for item in items:
        if item[1] not in seen:
            seen.add(item[1])
            unique.append(item)
    return unique


# "[high] ..." (the demo's own feedback) or "[E3] (high) ..." (a numbered issue of a parallel review round).
_MARKED = re.compile(r"\[(?:high|medium|low)\]|\[(?:E|I)\d+\]\s*\((?:high|medium|low)\)", re.IGNORECASE)
_NUMBERED = re.compile(r"\[((?:E|I)\d{1,3})\]\s*\((high|medium|low)\)(.*)", re.IGNORECASE)


def _numbered_issues(feedback: list[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
    """(id, severity, kind) of every numbered issue handed to a synthesizer or moderator, in order."""
    found = []
    for _name, text in feedback:
        for line in text.splitlines():
            match = _NUMBERED.search(line)
            if match:
                found.append((match.group(1).upper(), match.group(2).lower(), _issue_kind(match.group(3))))
    return found


def _split_long_sentence(sentence: str) -> str:
    words = sentence.split()
    middle = len(words) // 2
    # Break at the connective nearest the middle: ", and", ", which", "," ...
    best = None
    # Prefer a clause boundary (", and", ", which", ", but"); a list comma would cut a list in two.
    for connectives in ({"and", "which", "but", "so", "because", "while"}, None):
        for index, word in enumerate(words[:-3]):
            if index < 4 or not word.endswith(","):
                continue
            if connectives is not None and words[index + 1].lower() not in connectives:
                continue
            if best is None or abs(index - middle) < abs(best - middle):
                best = index
        if best is not None:
            break
    if best is None:
        best = middle
    first = " ".join(words[: best + 1]).rstrip(",;") + "."
    rest = words[best + 1 :]
    if rest and rest[0].lower() in {"and", "which", "but", "so"}:
        rest = rest[1:] if rest[0].lower() != "which" else ["This", *rest[1:]]
    second = _cap(" ".join(rest))
    # Halves that are still too long are split again, so one fix removes the problem.
    return " ".join(
        _split_long_sentence(part) if len(part.split()) > LONG_SENTENCE_WORDS else part for part in (first, second)
    )


def apply_issue(document: str, kind: str, inputs: Inputs) -> tuple[str, str]:
    """Fix one kind of problem in `document`; returns (document, what was done) or (document, "")."""
    topic = topic_of_brief(inputs.brief)
    paragraphs = _paragraphs(document)
    if kind == "long_sentence":
        for sentence in _body_sentences(document):
            if len(sentence.split()) > LONG_SENTENCE_WORDS:
                return document.replace(sentence, _split_long_sentence(sentence), 1), (
                    f"split the long sentence “{_short(sentence, 8)}”"
                )
    elif kind == "filler":
        changed = _cut_fillers(document)
        if changed != document:
            return changed, "cut filler phrases (“very”, “in order to”, “it is worth noting that”)"
    elif kind == "overclaim":
        changed = re.sub(rf"\b({_OVERCLAIM})\b", lambda m: _SOFTER.get(m.group(1), "most"), document, count=1)
        if changed != document:
            return changed, "qualified a sweeping claim"
    elif kind == "evidence" and inputs.references:
        fixed = _add_evidence(document, paragraphs, inputs, topic)
        if fixed is not None:
            return fixed
    elif kind == "example":
        example = (
            "For example, picture one street before and after the change: who uses it at eight in the morning, "
            "who loads there at noon, and who crosses it after school."
        )
        claims = _claim_paragraphs(document) or [p for p in paragraphs if _is_prose(p)]
        if claims:
            index = paragraphs.index(claims[0])
            paragraphs.insert(index + 1, example)
            return "\n\n".join(paragraphs) + "\n", "added a concrete example"
    elif kind == "objection":
        section = (
            "## Objections\n\n"
            f"Critics of {topic.subject} raise fair points: change costs money, takes time and inconveniences "
            "people before it helps them. Those costs are real, so the answer is to phase the change in, "
            "measure the results and adjust, not to dismiss the concern."
        )
        return _insert_before_ending(document, section), "added an Objections section that answers the critics"
    elif kind == "ending":
        section = (
            "## Recommendation\n\n"
            f"Start with a pilot, publish what it shows within a year, and expand only if the results hold: "
            f"on the evidence so far, {topic.claim}."
        )
        return document.rstrip() + "\n\n" + section + "\n", "ended with a Recommendation section"
    elif kind == "thesis" and paragraphs:
        for index, paragraph in enumerate(paragraphs):
            if _is_prose(paragraph):
                paragraphs[index] = f"This piece argues that {topic.claim}. " + paragraph
                return "\n\n".join(paragraphs) + "\n", "stated the thesis in the opening"
    return document, ""


def _cut_fillers(document: str) -> str:
    """`document` with every filler phrase replaced (keeping a capital), sentence starts re-capitalised."""
    changed = document
    for phrase, replacement in FILLERS:

        def keep_case(m: re.Match[str], r: str = replacement) -> str:
            return _cap(r) if m.group(0)[:1].isupper() else r

        changed = re.sub(rf"\b{re.escape(phrase)}", keep_case, changed, flags=re.IGNORECASE)
    # "It is worth noting that x" -> "x": capitalise the sentence start it leaves behind.
    return re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), changed, flags=re.M)


def _add_evidence(document: str, paragraphs: list[str], inputs: Inputs, topic: Topic) -> tuple[str, str] | None:
    """Quote a reference after the first unsupported claim paragraph: (document, what was done), or None.

    `paragraphs` are `document`'s paragraphs (the one changed is replaced in place); `inputs.references`
    is not empty.
    """
    cited = [title.lower() for title, _ in inputs.references]
    claims = _claim_paragraphs(document)
    for index, paragraph in enumerate(paragraphs):
        if paragraph not in claims:
            continue
        if "“" in paragraph or '"' in paragraph or any(t in paragraph.lower() for t in cited):
            continue
        if len(_sentences(paragraph)[0].split()) < 8:
            continue
        title, content = inputs.references[(index - 1) % len(inputs.references)]
        paragraphs[index] = paragraph.rstrip() + f" As {title} puts it: “{_best_sentence(content, topic)}”"
        return "\n\n".join(paragraphs) + "\n", f"added evidence from “{title}”"
    return None


def _insert_before_ending(document: str, section: str) -> str:
    match = None
    for candidate in re.finditer(r"^##\s+(conclusion|recommendation|summary|next steps)\b.*$", document, re.M | re.I):
        match = candidate
        break
    if match is None:
        return document.rstrip() + "\n\n" + section + "\n"
    return document[: match.start()] + section + "\n\n" + document[match.start() :]


def apply_note(document: str, note: str, inputs: Inputs) -> tuple[str, str]:
    """Follow the owner's note when the demo understands it; otherwise say so."""
    if not note:
        return document, ""
    add = re.search(r"\badd (?:a |an )?(?:section|paragraph|part) (?:on|about|covering) (.+?)[.!]?$", note, re.I | re.M)
    if add:
        subject = add.group(1).strip()
        heading = _cap(subject)
        if heading.lower() in document.lower():
            return document, f"your note asked for a section on {subject}; it is there"
        topic = topic_of_brief(inputs.brief)
        section = (
            f"## {heading}\n\n{heading} matters to {topic.subject} because it changes who benefits and who pays. "
            "This section is the demo's placeholder for it: a real model would write it from your note."
        )
        return _insert_before_ending(document, section), f"added a section on {subject}, as your note asked"
    if re.search(r"\b(shorten|shorter|cut|trim)\b", note, re.I):
        paragraphs = _paragraphs(document)
        prose = [i for i, p in enumerate(paragraphs) if _is_prose(p) and len(_sentences(p)) > 1]
        if prose:
            longest = max(prose, key=lambda i: len(paragraphs[i]))
            paragraphs[longest] = " ".join(_sentences(paragraphs[longest])[:-1])
            return "\n\n".join(paragraphs) + "\n", "shortened the longest paragraph, as your note asked"
    return document, (
        "read your note; the demo only follows notes like “add a section about …” or “shorten” — "
        "a language model would act on the rest"
    )


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------

_CRITERION_FAMILIES = (
    ("clarity", r"clar|readab|style|concis|plain|tone|language"),
    ("evidence", r"evidence|support|accura|fact|source|citation|research"),
    ("argument", r"argument|logic|persua|reason|thesis|rigou?r|insight|depth"),
    ("structure", r"structure|organi|flow|order|coheren|format"),
)


def _family(criterion: str) -> str | None:
    for family, pattern in _CRITERION_FAMILIES:
        if re.search(pattern, criterion, re.IGNORECASE):
            return family
    return None


def _all_issues(document: str, inputs: Inputs, family: str = "writer") -> list[Issue]:
    """What `family` sees: a reviewer its own checks, a writer everything an editor or a critic would find."""
    families = (family,) if family in ("editor", "critic") else ("editor", "critic")
    found: dict[str, Issue] = {}
    for fam in families:
        for issue in find_issues(document, inputs, role_family=fam):
            found.setdefault(issue.kind, issue)
    return sorted(found.values(), key=lambda issue: SEVERITY_ORDER[issue.severity])


def score_document(document: str, inputs: Inputs, criteria: list[str], family: str = "writer") -> dict[str, float]:
    """0-10 per criterion from the problems the role (`family`) still finds in `document`."""
    issues = {(i.kind, i.criterion): i for i in _all_issues(document, inputs, family)}
    scores = {}
    for name in criteria:
        criterion_family = _family(name)
        penalty = 0.0
        for issue in issues.values():
            weight = PENALTY[issue.severity]
            if criterion_family is None:
                penalty += weight / 2  # a criterion the demo cannot map ("Quality"): every problem counts half
            elif issue.criterion == criterion_family:
                penalty += weight
        if not document.strip():
            penalty = SCORE_CEILING
        scores[name] = round(max(SCORE_FLOOR, min(SCORE_CEILING, SCORE_CEILING - penalty)), 1)
    return scores


# --------------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------------


def role_family(role: str) -> str:
    role = role.lower()
    if re.search(r"edit|proof|copy", role):
        return "editor"
    if re.search(r"critic|review|check|moderat|judge|verif", role):
        return "critic"
    return "writer"


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _evaluation(scores: dict[str, float], feedback: list[str], round_number: int, *, force_json: bool = False) -> str:
    overall = round(sum(scores.values()) / len(scores), 1) if scores else 0.0
    if force_json or round_number % 3 == 1:
        payload = {"scores": scores, "overall": overall, "feedback": feedback}
        return f"<evaluation>\n```json\n{json.dumps(payload, ensure_ascii=False)}\n```\n</evaluation>\n"
    notes = [re.sub(r"\d", "", line) for line in feedback]  # keep numbers in feedback away from the score parser
    if round_number % 3 == 2:
        lines = [f"{name}: {_fmt(value)}/10" for name, value in scores.items()]
        lines += [f"Overall: {_fmt(overall)}/10"] + [f"Feedback: {line}" for line in notes]
        return "<evaluation>\n" + "\n".join(lines) + "\n</evaluation>\n"
    return "<evaluation>\n" + "\n".join(_fmt(value) for value in scores.values()) + "\n" + "\n".join(notes) + "\n"


def revise_reply(inputs: Inputs) -> str:
    """The sequential flow's recipe: the complete document, then an evaluation."""
    family = role_family(inputs.role)
    done: list[str] = []
    document = inputs.document
    if not document:
        document = draft_document(inputs)
        done.append("wrote a first draft from the brief" + (" and quoted the references" if inputs.references else ""))
    elif family == "editor":
        # An editor fixes what is obvious itself and leaves the rest to the writer as feedback.
        document, what = apply_issue(document, "filler", inputs)
        if what:
            done.append(what)
    elif family == "critic":
        pass  # a critic reviews: it hands the document on unchanged and says what is wrong with it
    else:
        applied = 0
        for severity, kind, _quote, name in _feedback_items(inputs.feedback + inputs.critiques):
            if applied == FIXES_PER_TURN:
                break
            document, what = apply_issue(document, kind, inputs)
            if what:
                applied += 1
                done.append(f"{what} ({name}, {severity})")
        # With budget left (or no teammates), the writer acts on its own read of the draft.
        for issue in _all_issues(document, inputs):
            if applied == FIXES_PER_TURN:
                break
            document, what = apply_issue(document, issue.kind, inputs)
            if what:
                applied += 1
                done.append(f"{what} (own review)")
    document, noted = apply_note(document, inputs.note, inputs)
    if noted:
        done.append(noted)
    scores = score_document(document, inputs, inputs.criteria, family)
    feedback: list[str] = []
    if done:
        feedback.append(f"{inputs.agent_name} {'; '.join(done)}.")
    if family in ("editor", "critic"):
        feedback += [issue.line() for issue in find_issues(document, inputs, role_family=family)]
        if len(feedback) == (1 if done else 0):
            feedback.append("No problems left that this reviewer can see.")
    else:
        remaining = _all_issues(document, inputs)
        if remaining:
            feedback.append(f"Still open: {remaining[0].problem}")
        elif not done:
            feedback.append("Nothing left to apply from the feedback; the draft stands.")
    return document.rstrip() + "\n\n" + _evaluation(scores, feedback, inputs.round, force_json=family != "writer")


_FOCUS = (
    (r"style|line|copy|clar|read", "clarity"),
    (r"evidence|fact|research|source|engineer", "evidence"),
    (r"argument|logic|product|risk|thesis", "argument"),
    (r"structur|outline|organi", "structure"),
)


def _focus(inputs: Inputs) -> str | None:
    """A reviewer's speciality from its name or role ("Evidence critic", "Line editor"), if any."""
    text = f"{inputs.agent_name} {inputs.role}".lower()
    for pattern, criterion in _FOCUS:
        if re.search(pattern, text):
            return criterion
    return None


def review_issues(inputs: Inputs) -> list[Issue]:
    """What this reviewer reports: its family's findings, its speciality first (or only, when it has any)."""
    family = role_family(inputs.role)
    family = family if family != "writer" else "critic"
    issues = find_issues(inputs.document, inputs, role_family=family)
    focus = _focus(inputs)
    focused = [issue for issue in issues if issue.criterion == focus]
    if focused:
        # A specialist reports its own kind of problem, and the others only when they are serious.
        rest = [issue for issue in issues if issue.criterion != focus and issue.severity == "high"]
        return focused + rest
    return issues


def critique_reply(inputs: Inputs) -> str:
    """A review without a document (the `critique` recipe of the parallel flows): comments, then the
    issues as JSON inside <issues> (severity, an exact passage, problem, fix), then an evaluation of the
    document as received."""
    family = role_family(inputs.role)
    issues = review_issues(inputs)
    scores = score_document(inputs.document, inputs, inputs.criteria, family if family != "writer" else "critic")
    focus = _focus(inputs)
    lens = f" with an eye on {focus}" if focus else ""
    if issues:
        severities = ", ".join(sorted({i.severity for i in issues}, key=lambda s: SEVERITY_ORDER.get(s, 3)))
        comments = (
            f"{inputs.agent_name} (demo reviewer, not a language model) read the document{lens} and found "
            f"{len(issues)} issue{'s' if len(issues) != 1 else ''} ({severities})."
        )
    else:
        comments = f"{inputs.agent_name} (demo reviewer, not a language model) read the document{lens}: nothing to fix."
    listed = [
        {"severity": i.severity, "passage": i.quote.rstrip(" …"), "problem": i.problem, "fix": i.suggestion}
        for i in issues
    ]
    block = "<issues>\n" + json.dumps(listed, indent=1, ensure_ascii=False) + "\n</issues>"
    feedback = [issue.line() for issue in issues] or ["No problems left that this reviewer can see."]
    return f"{comments}\n\n{block}\n\n" + _evaluation(scores, feedback, inputs.round, force_json=True)


def synthesize_reply(inputs: Inputs) -> str:
    """Synthesizer (`synthesize`, decisions on E1, E2...) or moderator (`moderate`, resolutions on I1, I2...):
    apply the reviews' issues, most severe first, and say issue by issue what was done."""
    document = inputs.document or draft_document(inputs)
    feedback = inputs.critiques + inputs.feedback
    applied: dict[str, str] = {}  # kind -> what was done
    for _severity, feedback_kind, _quote, _name in _feedback_items(feedback):
        document, what = apply_issue(document, feedback_kind, inputs)
        if what:
            applied[feedback_kind] = what
    document, noted = apply_note(document, inputs.note, inputs)
    scores = score_document(document, inputs, inputs.criteria)
    moderate = inputs.recipe == "moderate"
    items = []
    for ident, _severity, kind in _numbered_issues(feedback):
        done = applied.get(kind) if kind else None
        if moderate:
            items.append(
                {"id": ident, "action": "fixed", "note": f"{_cap(done)}."}
                if done
                else {"id": ident, "action": "declined", "note": _declined(kind)}
            )
        else:
            items.append(
                {"id": ident, "decision": "accepted", "reason": f"{_cap(done)}."}
                if done
                else {"id": ident, "decision": "rejected", "reason": _declined(kind)}
            )
    tag = "resolutions" if moderate else "decisions"
    taken = list(dict.fromkeys(applied.values())) + ([noted] if noted else [])
    summary = [f"Took: {'; '.join(taken)}."] if taken else ["Nothing in the reviews needed a change."]
    body = document.rstrip() + "\n\n"
    if items or inputs.recipe in ("synthesize", "moderate"):
        body += f"<{tag}>\n" + json.dumps(items, indent=1, ensure_ascii=False) + f"\n</{tag}>\n\n"
    return body + _evaluation(scores, summary, inputs.round, force_json=True)


def _declined(kind: str | None) -> str:
    if kind is None:
        return "The demo cannot act on this kind of suggestion; a language model would."
    return "Another reviewer's point already covers it, or the passage has changed since."


PLAN_SECTIONS = [
    ("context", "section", "The context", "why {subject} matters now"),
    ("case", "section", "The case", "the strongest arguments that {claim}"),
    ("objections", "section", "The objections", "the best objections to {subject} and answers to them"),
]


def plan_reply(inputs: Inputs) -> str:
    """A task graph derived from the brief, in <plan> tags: research first, three sections that depend on it,
    a conclusion that depends on the sections (two levels of dependencies). Honours "Plan at most N tasks"."""
    topic = topic_of_brief(inputs.brief)
    limit = re.search(r"Plan at most (\d+) tasks", inputs.task or "")
    cap = int(limit.group(1)) if limit else 8
    sources = ", ".join(f"“{title}”" for title, _ in inputs.references) or "the brief"
    tasks = [
        {
            "id": "research",
            "title": f"Key facts on {topic.subject}"[:120],
            "kind": "research",
            "instructions": f"Collect the facts and figures on {topic.subject} the piece needs, from {sources}.",
            "depends_on": [],
            "expected_output": "A list of five or more facts, each with where it comes from.",
        }
    ]
    for task_id, kind, title, what in PLAN_SECTIONS:
        tasks.append(
            {
                "id": task_id,
                "title": title,
                "kind": kind,
                "instructions": f"Write the section “{title}”: "
                + what.format(subject=topic.subject, claim=topic.claim)
                + ".",
                "depends_on": ["research"],
                "expected_output": "One Markdown section of 80-150 words with a heading.",
            }
        )
    tasks.append(
        {
            "id": "conclusion",
            "title": "Conclusion",
            "kind": "summary",
            "instructions": f"Close the piece: what follows for {topic.subject}, and one recommendation.",
            "depends_on": [str(t["id"]) for t in tasks[1:]],
            "expected_output": "One short Markdown section (60-100 words) with a heading.",
        }
    )
    tasks = tasks[: max(1, cap)]
    keep = {t["id"] for t in tasks}
    for task in tasks:
        task["depends_on"] = [d for d in task["depends_on"] if d in keep]
    body = "<plan>\n" + json.dumps({"tasks": tasks}, indent=1, ensure_ascii=False) + "\n</plan>\n\n"
    scores = dict.fromkeys(inputs.criteria, 8.0)
    return body + _evaluation(
        scores, [f"{len(tasks)} tasks; independent sections run in parallel."], 1, force_json=True
    )


def _task_block(inputs: Inputs) -> tuple[str, list[tuple[str, str]]]:
    """(the task's text, [(label, result)] of the other blocks) from a planned call's prompt."""
    blocks = [(name, text) for name, text in inputs.feedback]
    task = next((text for name, text in blocks if name == "Task"), inputs.task)
    return task, [(name, text) for name, text in blocks if name != "Task"]


def task_reply(inputs: Inputs) -> str:
    """A planned task's result: a section built from its title, its instructions and its inputs' first lines."""
    task, results = _task_block(inputs)
    topic = topic_of_brief(inputs.brief)
    header = re.match(r"Task (\S+) \((\w+)\): (.+)", task)
    title = header.group(3).strip() if header else "Result"
    kind = header.group(2) if header else "section"
    instructions = task.split("\n\n")[1].strip() if task.count("\n\n") >= 1 else task
    lines = []
    if kind == "research":
        facts = [_best_sentence(body, topic) for _, body in inputs.references] or [_first_sentence(inputs.brief)]
        lines.append(f"## {title}\n")
        lines += [
            f"- {fact} (source: {name})"
            for fact, (name, _) in zip(facts, inputs.references or [("the brief", "")], strict=False)
        ]
        lines.append(
            f"- The brief asks for a piece on {topic.subject}; the facts above are what the sections can cite."
        )
        lines.append(f"- Open questions: what {topic.subject} costs, who benefits first, and how progress is measured.")
    else:
        lines.append(f"## {title}\n")
        lines.append(f"{instructions} This section keeps to the brief and argues that {topic.claim}.")
        for label, body in results:
            first = next((ln.strip("-# ").strip() for ln in body.splitlines() if ln.strip("-# ").strip()), "")
            if first and not label.startswith("Your earlier attempt"):
                lines.append(f"Building on {label.split(':', 1)[-1].strip()}: {first}")
        lines.append(
            f"Taken together, the evidence points one way: {topic.subject} repays the effort, and the details "
            "above show where to start and what to measure along the way."
        )
    text = "\n".join(lines) + "\n\n"
    words = len(text.split())
    scores = dict.fromkeys(inputs.criteria, 8.0 if words >= 40 else 5.0)
    return text + _evaluation(scores, [f"{words} words for task “{title}”."], 1, force_json=True)


def verify_reply(inputs: Inputs) -> str:
    """A verdict on a planned task's output: pass when it has a heading or list and 40+ words, else fail."""
    _task, results = _task_block(inputs)
    output = results[0][1] if results else ""
    words = len(output.split())
    problems = []
    if words < 40:
        problems.append(f"The output has only {words} words; the expected output asks for more.")
    if not re.search(r"^(#|- )", output, re.M):
        problems.append("The output has no heading or list, so it cannot stand as a part of the document.")
    verdict = {
        "verdict": "fail" if problems else "pass",
        "notes": " ".join(problems) or f"{words} words, structured as asked.",
    }
    scores = dict.fromkeys(inputs.criteria, 4.0 if problems else 8.0)
    body = "<verdict>\n" + json.dumps(verdict, ensure_ascii=False) + "\n</verdict>\n\n"
    return body + _evaluation(scores, [verdict["notes"]], 1, force_json=True)


def assemble_reply(inputs: Inputs) -> str:
    """The document: a title from the brief, then every task result in the given order; a missing-parts line."""
    task, results = _task_block(inputs)
    topic = topic_of_brief(inputs.brief)
    parts = [f"# {topic.title}\n"]
    for _, body in results:
        parts.append(body.strip() + "\n")
    missing = re.search(r"These tasks failed, so their parts are missing: (.+?)\. Say", task, re.S)
    if missing:
        parts.append(f"*Missing from this draft: {missing.group(1)}.*\n")
    document = "\n".join(parts)
    scores = dict.fromkeys(inputs.criteria, 6.0 if missing else 8.0)
    return document + "\n" + _evaluation(scores, ["Assembled in plan order."], 1, force_json=True)


def route_reply(inputs: Inputs) -> str:
    """A handoff decision as JSON: to an editor when there is a draft, otherwise to a writer."""
    target = "editor" if inputs.document else "writer"
    reason = "There is a draft to review." if inputs.document else "Nothing is written yet."
    return "```json\n" + json.dumps({"handoff": target, "reason": reason}) + "\n```\n"


# --------------------------------------------------------------------------------------------------
# Suggest a team (orchestration.team_suggestion): a rule-based proposal derived from the brief and goal
# --------------------------------------------------------------------------------------------------

_ROUNDTABLE_WORDS = r"product|spec|proposal|launch|feature|roadmap|risk|rfc|design doc|decision|strategy|plan\b"
_EDITORIAL_WORDS = r"essay|article|op-ed|post|story|newsletter|report|chapter|publish|polish|edit"
_PIPELINE_WORDS = r"research|white paper|literature|survey|sources|report on|briefing"
_EVIDENCE_WORDS = r"evidence|research|data|source|study|studies|citation|fact"
_DEMO_MODEL = "demo:demo-writer"


def _crit(name: str, description: str, weight: float) -> dict[str, Any]:
    return {"name": name, "description": description, "weight": weight}


def _suggested_agents(
    flow: str, topic: Topic, goal: str, text: str, room: int
) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """(name, role, role prompt, criteria) for each agent, at most `room` of them."""
    about = f"on “{topic.title}”" if topic.title else "for the brief"
    aim = f" The goal: {goal.rstrip('.')}." if goal else ""
    evidence = bool(re.search(_EVIDENCE_WORDS, text))
    writer = (
        "Writer",
        "writer",
        f"You are the writer. Draft and revise a clear, well-argued piece {about}.{aim}",
        [
            _crit("Argument strength", "A clear thesis, defended.", 1.5),
            _crit("Clarity", "Plain, precise sentences.", 1.0),
        ],
    )
    if flow == "roundtable":
        return _roundtable_team(about, aim, text, room)
    if flow == "pipeline":
        return _pipeline_team(about, aim)
    if flow == "editorial":
        return [writer, *_editorial_team(about, room)]
    second = (
        (
            "Evidence editor",
            "editor",
            f"You are the evidence editor. Check that every claim {about} is supported "
            "and say where a source or example is missing.",
            [_crit("Evidence", "Claims are supported.", 1.5)],
        )
        if evidence
        else (
            "Line editor",
            "editor",
            "You are the line editor. Tighten sentences, cut filler and keep the author's voice.",
            [_crit("Clarity", "Plain, precise sentences.", 1.0)],
        )
    )
    return [writer, second][:room]


def _roundtable_team(about: str, aim: str, text: str, room: int) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """Critics suited to the brief (a product brief gets product, engineering and risk critics), then the moderator."""
    product = bool(re.search(r"product|spec|launch|feature|roadmap|rfc|design doc", text))
    names = (
        [
            ("Product critic", "user value and scope"),
            ("Engineering critic", "feasibility and cost"),
            ("Risk critic", "what could go wrong"),
        ]
        if product
        else [
            ("Argument critic", "the logic of the case"),
            ("Evidence critic", "support for each claim"),
            ("Style critic", "readability"),
        ]
    )
    critics = [
        (
            name,
            "critic",
            f"You are the {name.lower()}. Review the document {about} for {focus}; raise "
            f"concrete issues with a severity.{aim}",
            [_crit(focus.capitalize(), f"Judged on {focus}.", 1.0)],
        )
        for name, focus in names
    ][: max(1, room - 1)]
    moderator = (
        "Moderator",
        "moderator",
        f"You are the moderator. Revise the document {about} to resolve the critics' issues, most severe "
        f"first, and say what you did with each.{aim}",
        [_crit("Issues resolved", "High-severity issues fixed.", 1.5), _crit("Coherence", "One voice.", 1.0)],
    )
    return [*critics, moderator]


def _pipeline_team(about: str, aim: str) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """The pipeline's four stages: researcher, planner, builder, reviewer."""
    return [
        (
            "Researcher",
            "researcher",
            f"You are the researcher. Find what the references say {about}, citing them.",
            [_crit("Coverage", "Every relevant source is used.", 1.0)],
        ),
        (
            "Planner",
            "planner",
            f"You are the planner. Outline the piece {about} from the research.{aim}",
            [_crit("Structure", "Sections build on each other.", 1.0)],
        ),
        (
            "Builder",
            "builder",
            f"You are the builder. Write the complete piece {about} from the outline.{aim}",
            [
                _crit("Clarity", "Plain, precise sentences.", 1.0),
                _crit("Evidence", "Claims cite the research.", 1.5),
            ],
        ),
        (
            "Reviewer",
            "reviewer",
            "You are the reviewer. Score the draft, flag unsupported claims and propose exact find/replace edits.",
            [_crit("Accuracy", "Claims match the sources.", 1.5)],
        ),
    ]


def _editorial_team(about: str, room: int) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """The editors that fit in `room` beside the writer, then the synthesizer."""
    editors = [
        (
            "Structural editor",
            "editor",
            f"You are the structural editor. Check the order and the argument of "
            f"the draft {about}; suggest concrete moves and cuts.",
            [_crit("Structure", "Sections build.", 1.0)],
        ),
        (
            "Line editor",
            "editor",
            "You are the line editor. Tighten sentences, cut filler and fix wording.",
            [_crit("Clarity", "Plain, precise sentences.", 1.0)],
        ),
    ][: max(1, room - 2)]
    synthesizer = (
        "Synthesizer",
        "synthesizer",
        f"You are the synthesizer. Merge the editors' suggestions into the next version {about}; say which "
        "you took and why.",
        [_crit("Coherence", "The edits read as one voice.", 1.0)],
    )
    return [*editors, synthesizer]


def team_reply(request: ModelRequest) -> str:
    """A team proposal as JSON (the `suggest_team` recipe), derived from the brief and goal with fixed rules:
    the words of the brief pick the flow among those the plan allows, the topic names the role prompts,
    the first usable model (the demo's own when offered) runs every agent."""
    meta = request.metadata
    brief = str(meta.get("brief") or _tag(request.user, "brief") or "")
    goal = str(meta.get("goal") or _tag(request.user, "goal") or "").strip()
    flows = [str(f) for f in (meta.get("allowed_flows") or ["sequential"])]
    models = [str(m) for m in (meta.get("models") or [_DEMO_MODEL])]
    room = max(1, int(meta.get("max_agents") or 2))
    text = f"{brief}\n{goal}".lower()
    topic = topic_of_brief(brief)
    flow, why = "sequential", "a writer and an editor take turns on the whole document"
    if "pipeline" in flows and room >= 4 and re.search(_PIPELINE_WORDS, text):
        flow, why = (
            "pipeline",
            "the brief asks for researched work, so research, an outline, a draft and a review run in turn",
        )
    elif "roundtable" in flows and room >= 2 and re.search(_ROUNDTABLE_WORDS, text):
        flow, why = (
            "roundtable",
            "the brief asks for a decision document, so critics raise issues and a moderator resolves them",
        )
    elif "editorial" in flows and room >= 3 and re.search(_EDITORIAL_WORDS, text):
        flow, why = "editorial", "the brief asks for a finished piece, so editors review each draft in parallel"
    model = _DEMO_MODEL if _DEMO_MODEL in models else models[0]
    agents = [
        {"name": name, "role": role, "model": model, "role_prompt": prompt, "criteria": criteria}
        for name, role, prompt, criteria in _suggested_agents(flow, topic, goal, text, room)
    ]
    proposal = {
        "flow": flow,
        "rationale": f"Demo planner (fixed rules, not a language model): {why}; topic “{topic.title}”.",
        "agents": agents,
        "termination": {
            "max_rounds": min(3, int(meta.get("max_rounds") or 3)),
            "score_threshold": 8.5,
            "convergence_percent": None if flow == "roundtable" else 5,
            "stop_when_no_high_issues": True,
            "stop_below_change_percent": 5,
        },
    }
    return "Here is the proposed team:\n\n```json\n" + json.dumps(proposal, indent=1, ensure_ascii=False) + "\n```\n"


def demo_reply(request: ModelRequest) -> str:
    """The demo's whole reply to `request` (deterministic)."""
    if str(request.metadata.get("recipe") or "") == "suggest_team":
        return team_reply(request)
    inputs = read_inputs(request)
    if inputs.recipe in ("research", "outline", "build", "review"):
        from orchestration.providers import demo_pipeline

        if inputs.recipe == "build":
            return demo_pipeline.build_reply(inputs, request.user)
        stage_reply: Callable[[Inputs], str] = getattr(demo_pipeline, f"{inputs.recipe}_reply")
        return stage_reply(inputs)
    if inputs.recipe == "critique":
        return critique_reply(inputs)
    if inputs.recipe in ("synthesize", "moderate"):
        return synthesize_reply(inputs)
    if inputs.recipe == "plan":
        return plan_reply(inputs)
    if inputs.recipe == "task":
        return task_reply(inputs)
    if inputs.recipe == "verify":
        return verify_reply(inputs)
    if inputs.recipe == "assemble":
        return assemble_reply(inputs)
    if inputs.recipe == "route":
        return route_reply(inputs)
    return revise_reply(inputs)


def _word_count(text: str) -> int:
    return len(text.split())


class DemoAdapter(BaseAdapter):
    provider = DEMO

    def __init__(self, *, tokens_per_second: float = 0.0) -> None:
        self.tokens_per_second = tokens_per_second

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        calls: list[ToolCall] = []
        if request.metadata.get("recipe") == "conversation":  # triage, specialists, tools: conversations/demo.py
            from orchestration.conversations.demo import conversation_reply

            text, calls = conversation_reply(request)
        elif request.metadata.get("purpose") == "stage":  # a pipeline conversation's stage: conversations/demo.py
            from orchestration.conversations.demo import stage_reply

            text = stage_reply(request)
        else:
            text = demo_reply(request)
        pieces = re.findall(r"\S+\s*", text)
        # Leading whitespace of the text is kept with the first chunk.
        lead = text[: len(text) - len(text.lstrip())]
        chunks = [
            (lead if i == 0 else "") + "".join(pieces[i : i + WORDS_PER_CHUNK])
            for i in range(0, len(pieces), WORDS_PER_CHUNK)
        ]
        delay = (WORDS_PER_CHUNK * TOKENS_PER_WORD) / self.tokens_per_second if self.tokens_per_second > 0 else 0.0
        for index, chunk in enumerate(chunks):
            if delay and index:
                await asyncio.sleep(delay)
            elif index and index % 50 == 0:
                await asyncio.sleep(0)  # stay cancellable and fair to other streams when instant
            yield TextDelta(chunk)
        for call in calls:
            yield call
        yield StreamEnd(
            usage=Usage(
                input_tokens=math.ceil(_word_count(request.system + " " + request.user) * TOKENS_PER_WORD),
                output_tokens=max(1, math.ceil(_word_count(text) * TOKENS_PER_WORD))
                if calls
                else math.ceil(_word_count(text) * TOKENS_PER_WORD),
            ),
            stop_reason="tool_use" if calls else "end_turn",
        )

    async def check(self) -> tuple[bool, str]:
        return True, f"{DEMO_LABEL}: always available, no key needed."
