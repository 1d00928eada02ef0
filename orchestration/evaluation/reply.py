"""Splitting an agent's reply into the document and its evaluation (and its reasoning, if any)."""

from __future__ import annotations

import logging
import re

from orchestration.evaluation.text_tiers import _strip_markdown

logger = logging.getLogger("orchestration.evaluation")  # the name it had before the split


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
