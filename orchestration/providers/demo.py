"""The offline demo provider: deterministic Markdown that changes less each round, then an evaluation.

It is not a language model and says so (DEMO_LABEL). It lets people try every flow with no API key,
and gives tests and benchmarks a provider with no network at all. The evaluation block rotates
through the three formats the evaluation parser understands:
round % 3 == 1 -> JSON, round % 3 == 2 -> "Criterion: 7.5/10" lines, round % 3 == 0 -> bare numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections.abc import AsyncIterator

from orchestration.providers.base import BaseAdapter, ModelRequest, StreamEnd, StreamEvent, TextDelta, Usage

DEMO_LABEL = "Demo (offline, not a language model)"
WORDS_PER_CHUNK = 3
TOKENS_PER_WORD = 1 / 0.75  # the usual rule of thumb for English
SCORE_START = 5.5
SCORE_STEP = 1.0
SCORE_CAP = 9.8

# Section n joins the document in round n - 1 (the first three are there from round 1), so the
# document grows by one section a round until the outline is complete and then holds still.
SECTIONS = ["Overview", "Background", "Key ideas", "Approach", "Examples", "Risks and trade-offs", "Next steps"]
SENTENCES = [
    "{topic} matters because it shapes how people decide what to do next.",
    "A clear account of {topic} starts with the problem it solves.",
    "Most confusion about {topic} comes from mixing goals with methods.",
    "The strongest case for {topic} rests on evidence that is easy to check.",
    "Readers new to {topic} need one concrete example before any theory.",
    "Each claim about {topic} should say what would prove it wrong.",
    "Teams that adopt {topic} tend to start small and measure early.",
    "The cost of {topic} is mostly time spent on coordination.",
    "A useful test for {topic} is whether a newcomer can explain it back.",
    "Trade-offs in {topic} become visible only when constraints are written down.",
    "The history of {topic} shows a steady move from intuition to practice.",
    "Good writing about {topic} names its audience in the first paragraph.",
    "Critics of {topic} raise fair points about scale and maintenance.",
    "Small, reversible steps keep {topic} safe to try.",
    "The next step for {topic} is a short pilot with a clear success measure.",
    "Open questions about {topic} deserve a list, not a footnote.",
]
FEEDBACK = [
    "Tighten the opening and make the main claim explicit.",
    "Add one concrete example to the middle section.",
    "The structure works; trim repetition in the later sections.",
    "Good progress; the argument now flows from problem to plan.",
    "Nearly there: only small wording changes remain.",
]


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # deterministic, not for security


def topic_of(request: ModelRequest) -> str:
    """The first line of the brief: metadata["brief"], else a "Brief:" line, else the first line of `user`."""
    brief = str(request.metadata.get("brief") or "")
    lines = [line.strip() for line in brief.splitlines() if line.strip()]
    if not lines:
        user_lines = [line.strip() for line in request.user.splitlines() if line.strip()]
        marked = [line for line in user_lines if re.match(r"^#*\s*brief\s*:", line, re.IGNORECASE)]
        lines = [re.sub(r"^#*\s*brief\s*:\s*", "", marked[0], flags=re.IGNORECASE)] if marked else user_lines
    topic = re.sub(r"^[#>*\-\s]+", "", lines[0]) if lines else ""
    topic = topic.strip().rstrip(".:") or "the brief"
    return topic[:80].rstrip()


def _section(topic: str, session: object, index: int, revision: int) -> str:
    rng = _rng("section", session, topic, index, revision)
    sentences = rng.sample(SENTENCES, 3)
    # Mid-sentence the topic reads better lower-cased, unless it starts with an acronym ("API design").
    inline = topic if topic[1:2].isupper() else topic[:1].lower() + topic[1:]
    return f"## {SECTIONS[index]}\n\n" + " ".join(s.format(topic=inline) for s in sentences)


def demo_document(request: ModelRequest) -> str:
    """Round 1 has three sections; each round adds one and rewords the one added the round before.

    So the change between rounds shrinks (everything, then 2 of 5 sections, ... 1 of 7) and from
    round 7 on the document holds still, which lets convergence trigger. The agent's name is left
    out on purpose: agents of one round agree, so the end-of-round document is stable.
    """
    topic = topic_of(request)
    round_number = max(1, int(request.metadata.get("round") or 1))
    session = request.metadata.get("session_id", 0)
    parts = [f"# {topic[:1].upper()}{topic[1:]}"]
    for index in range(min(len(SECTIONS), 2 + round_number)):
        appeared = max(1, index - 1)
        parts.append(_section(topic, session, index, revision=int(round_number > appeared)))
    return "\n\n".join(parts) + "\n"


def demo_scores(request: ModelRequest) -> tuple[dict[str, float], float]:
    round_number = max(1, int(request.metadata.get("round") or 1))
    criteria = list(request.metadata.get("criteria") or []) or ["Quality"]
    base = min(SCORE_CAP, SCORE_START + SCORE_STEP * round_number)
    scores = {}
    for name in criteria:
        # Jitter only downwards and by less than one round's step, so scores never fall between rounds.
        jitter = _rng("score", request.metadata.get("session_id", 0), round_number, name).choice([0.0, 0.1, 0.2])
        scores[str(name)] = round(min(SCORE_CAP, base - jitter), 1)
    overall = round(sum(scores.values()) / len(scores), 1)
    return scores, overall


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def demo_evaluation(request: ModelRequest) -> str:
    round_number = max(1, int(request.metadata.get("round") or 1))
    scores, overall = demo_scores(request)
    feedback = FEEDBACK[min(round_number, len(FEEDBACK)) - 1]
    if round_number % 3 == 1:
        payload = {"scores": scores, "overall": overall, "feedback": feedback}
        return f"<evaluation>\n```json\n{json.dumps(payload)}\n```\n</evaluation>\n"
    if round_number % 3 == 2:
        lines = [f"{name}: {_fmt(value)}/10" for name, value in scores.items()]
        lines += [f"Overall: {_fmt(overall)}/10", f"Feedback: {feedback}"]
        return "<evaluation>\n" + "\n".join(lines) + "\n</evaluation>\n"
    return "<evaluation>\n" + "\n".join(_fmt(value) for value in scores.values()) + "\n"


def demo_reply(request: ModelRequest) -> str:
    return demo_document(request) + "\n" + demo_evaluation(request)


def _word_count(text: str) -> int:
    return len(text.split())


class DemoAdapter(BaseAdapter):
    provider = "demo"
    label = DEMO_LABEL

    def __init__(self, *, tokens_per_second: float = 0.0) -> None:
        self.tokens_per_second = tokens_per_second

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        from orchestration.providers.demo_recipes import recipe_reply

        text = recipe_reply(request) or demo_reply(request)
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
        yield StreamEnd(
            usage=Usage(
                input_tokens=math.ceil(_word_count(request.system + " " + request.user) * TOKENS_PER_WORD),
                output_tokens=math.ceil(_word_count(text) * TOKENS_PER_WORD),
            ),
            stop_reason="end_turn",
        )

    async def check(self) -> tuple[bool, str]:
        return True, f"{DEMO_LABEL}: always available, no key needed."
