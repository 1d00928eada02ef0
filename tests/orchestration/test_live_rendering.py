"""Issue 15: a streaming reply's body, rendered block by block (orchestration/live_markdown.py), is the same
HTML as rendering the whole text, however the text grows and whatever Markdown it holds."""

from __future__ import annotations

import random

from orchestration import live_markdown
from orchestration.rendering import render_markdown

BLOCKS = [
    "Plain words and *emphasis* and **strong** text.",
    "Another paragraph\nwith a second line and `code`.",
    "# A heading",
    "## Heading two ##",
    "Setext title\n------------",
    "- item one\n- item two",
    "- loose one\n\n- loose two",
    "1. first\n2. second",
    "    indented code\n    more code",
    "> a quote\n> goes on",
    "Term\n: its definition",
    ": a definition after a blank line",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "***",
    "Text with a [link](https://example.com) and an & ampersand &amp; entity.",
    "Uses a [reference][r] link.",
    "[r]: https://example.com/ref",
    "A footnote[^1] here.",
    "[^1]: The note.",
    "*[HTML]: Hyper Text",
    "HTML abbreviation use.",
    "```\nfenced\n\ncode\n```",
    "<div>raw html</div>",
    "Lazy\ncontinuation line",
    "  two-space indented paragraph",
    "Ünïcode words — dashes “quotes”.",
    "Ends with two spaces  \nhard break.",
    "Heading {: #x }",
]


def _documents(seed: int, count: int, blocks_from: list[str] = BLOCKS) -> list[str]:
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        blocks = [rng.choice(blocks_from) for _ in range(rng.randint(1, 9))]
        separators = [rng.choice(["\n\n", "\n\n", "\n\n", "\n", "\n\n\n", "\n  \n"]) for _ in blocks]
        documents.append("".join(b + s for b, s in zip(blocks, separators, strict=True)).rstrip())
    return documents


def test_every_prefix_of_a_growing_reply_renders_as_the_whole_text_would(monkeypatch):
    # Half the documents hold only blocks that allow reuse, so the block-by-block path is well exercised.
    reusable = [b for b in BLOCKS if not live_markdown._CROSS_BLOCK.search(b)]
    documents = _documents(seed=15, count=150) + _documents(seed=16, count=150, blocks_from=reusable)
    partial: list[str] = []
    monkeypatch.setattr(live_markdown, "render_markdown", lambda text: partial.append(text) or render_markdown(text))
    for index, document in enumerate(documents):
        key = ("test", index)
        step = max(1, len(document) // 40)
        for end in [*range(1, len(document), step), len(document)]:
            text = document[:end]
            assert live_markdown.streaming_html(key, text) == render_markdown(text), (index, text)
        live_markdown.forget(key)
    whole = {d[:end] for d in documents for end in range(len(d) + 1)}
    assert sum(1 for text in partial if text not in whole) > 1000  # most renders were of a few blocks


def test_the_kept_paragraphs_are_reused_and_never_leak_into_another_text():
    plain = "First paragraph here.\n\nSecond paragraph here.\n\nThird one is being"
    assert live_markdown.streaming_html(("test", "a"), plain) == render_markdown(plain)
    # The same key with unrelated text (a reconnect, a re-run): rendered from scratch, not from the cache.
    other = "Something else entirely.\n\nNew text"
    assert live_markdown.streaming_html(("test", "a"), other) == render_markdown(other)
    # Text that went back (a page reloaded from saved text) renders correctly too.
    assert live_markdown.streaming_html(("test", "a"), plain[:30]) == render_markdown(plain[:30])
    hostile = "Fine words.\n\nThen <script>alert(1)</script> and [x](javascript:alert(1))"
    html = live_markdown.streaming_html(("test", "b"), hostile)
    assert html == render_markdown(hostile) and "<script" not in html and "javascript:" not in html
