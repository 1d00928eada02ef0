"""Route a reply's leading `<think>...</think>` block to the reasoning stream while it streams.

OpenAI-compatible reasoning models (DeepSeek-R1, Qwen with thinking, served by Ollama, vLLM without a
reasoning parser, llama.cpp) send their thinking as ordinary content, wrapped in `<think>` tags, before
the answer. Split live, the owner watches it fill the turn's reasoning panel instead of the document
card. Only the common shape is split here: a reply that *starts* (after whitespace) with the opening
tag. Every other shape (an eaten opening tag, a block later in the reply) is still taken out of the
saved reply when the turn completes (`orchestration.evaluation.split_reasoning`).
"""

from __future__ import annotations

import re

_OPEN = re.compile(r"<\s*(think|thinking|reasoning)\s*>", re.IGNORECASE)
# Longest opening tag we wait for before deciding the reply does not start with one ("< reasoning >").
_MAX_OPEN_CHARS = 24
_TAG_NAMES = ("think", "thinking", "reasoning")


def _could_open(text: str) -> bool:
    """True while `text` (stripped) may still grow into an opening tag."""
    squeezed = re.sub(r"\s+", "", text).lower()
    if not squeezed.startswith("<"):
        return False
    body = squeezed[1:]
    return any(
        name.startswith(body) or (body.startswith(name) and body[len(name) :] in ("", ">")) for name in _TAG_NAMES
    )


class ThinkTagSplitter:
    """feed(text) -> [("reasoning" | "text", piece), ...]; flush() at the end of the stream.

    Text is held back only while it could still be (part of) a tag, so streaming stays live. A block
    that never closes (the reply was cut off while thinking) is reasoning, as split_reasoning treats it.
    """

    def __init__(self) -> None:
        self.state = "start"  # start -> inside -> answer, or start -> answer
        self.pending = ""
        self.close: re.Pattern[str] | None = None
        self.trim = False  # strip whitespace at the start of the answer (after a block)
        self.thought_started = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        if not text:
            return []
        if self.state == "answer":
            if self.trim:  # the blank lines between the block and the answer belong to neither
                text = text.lstrip()
                self.trim = not text
            return [("text", text)] if text else []
        self.pending += text
        out: list[tuple[str, str]] = []
        if self.state == "start":
            stripped = self.pending.lstrip()
            if not stripped:
                return []
            match = _OPEN.match(stripped)
            if match is None:
                if _could_open(stripped) and len(stripped) < _MAX_OPEN_CHARS:
                    return []
                self.state, rest, self.pending = "answer", self.pending, ""
                return [("text", rest)]
            self.state = "inside"
            self.close = re.compile(rf"<\s*/\s*{match.group(1)}\s*>", re.IGNORECASE)
            self.pending = stripped[match.end() :].lstrip()
            self.thought_started = False
        if self.state == "inside":
            assert self.close is not None
            if not self.thought_started:  # the block's leading blank lines are not part of the thought
                self.pending = self.pending.lstrip()
            match = self.close.search(self.pending)
            if match is not None:
                thought, answer = self.pending[: match.start()].rstrip(), self.pending[match.end() :].lstrip()
                self.state, self.pending, self.trim = "answer", "", not answer
                if thought:
                    out.append(("reasoning", thought))
                if answer:
                    out.append(("text", answer))
                return out
            # Hold back from the last "<" (it may start the closing tag) and any trailing whitespace (it
            # may be the blank line before the closing tag).
            cut = self.pending.rfind("<")
            keep = cut if cut != -1 and len(self.pending) - cut < _MAX_OPEN_CHARS else len(self.pending)
            keep = len(self.pending[:keep].rstrip())
            thought, self.pending = self.pending[:keep], self.pending[keep:]
            if thought:
                self.thought_started = True
                out.append(("reasoning", thought))
        return out

    def flush(self) -> list[tuple[str, str]]:
        rest, self.pending = self.pending, ""
        if not rest:
            return []
        if self.state == "inside":
            rest = rest.rstrip()
            return [("reasoning", rest)] if rest else []
        return [("text", rest)]
