"""CPU a web process spends per streamed-text push, before and after issue 15's render changes.

    .venv/bin/python bench/live_render.py            # BENCH_VIEWERS=1 BENCH_WINDOW_PUSHES=1 by default

A reply of BENCH_PARAGRAPHS paragraphs (about 70 words each, like the writer turns of the sample
sessions) streams in 11-character pushes (one fake-provider chunk each, as bench/load.py sends them); each
push is handled the way the consumer handles it, for BENCH_VIEWERS connections watching the same turn, and
the CPU time (time.process_time) is divided by the number of pushes:
- before: merge the tail, then render_markdown(streaming_document(the whole text)) with a new Markdown
  instance per call (rendering.py before this change), once per push per viewer;
- after: live.merge_tails + live.text_fragment (live_markdown.streaming_html: only the blocks after the
  last safe boundary are rendered, the finished paragraphs' HTML is shared by every viewer), once per push;
- after, with the render window: as under load, BENCH_WINDOW_PUSHES pushes merge before one render.
No database: the turn's text is already held, as for every push while a page watches.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
os.environ.setdefault("ATELIER_ENV", "test")

import django  # noqa: E402

django.setup()

import markdown  # noqa: E402
from django.utils.safestring import mark_safe  # noqa: E402

from orchestration import live, live_markdown  # noqa: E402
from orchestration.rendering import sanitize_html  # noqa: E402

PARAGRAPHS = int(os.environ.get("BENCH_PARAGRAPHS", "8"))
VIEWERS = int(os.environ.get("BENCH_VIEWERS", "1"))
WINDOW_PUSHES = int(os.environ.get("BENCH_WINDOW_PUSHES", "1"))
CHUNK = 11


def reply() -> str:
    words = ("the shade of street trees cools the pavement and *slows* the heat of the afternoon " * 5).split()
    paragraphs = [" ".join(f"{w}{p}" if i % 9 == 0 else w for i, w in enumerate(words[:70])) for p in range(PARAGRAPHS)]
    return "# Street trees\n\n" + "\n\n".join(paragraphs)


def old_render(text: str) -> str:
    """rendering.render_markdown as it was: a new Markdown instance per call."""
    html = markdown.markdown(text or "", extensions=["extra", "sane_lists"], output_format="html")
    return mark_safe(sanitize_html(html))  # noqa: S308 - sanitized just above


def pushes(text: str) -> list[dict]:
    """The engine's pushes: each turn's whole unsaved tail from offset 0 (no save within the bench)."""
    return [
        {"turn_id": 1, "kind": "chunk", "offset": 0, "text": text[:end]}
        for end in range(CHUNK, len(text) + CHUNK, CHUNK)
    ]


def before(messages: list[dict]) -> float:
    texts: list[live.TurnTextCache] = [{1: ""} for _ in range(VIEWERS)]
    start = time.process_time()
    for message in messages:  # each push reaches every viewer before the next one
        for turn_text in texts:
            if live._merge_pieces(turn_text, 1, [(message["offset"], message["text"])]):
                old_render(live.streaming_document(turn_text[1]))
    return time.process_time() - start


def after(messages: list[dict], window: int) -> float:
    live_markdown.forget(1)
    texts: list[live.TurnTextCache] = [{1: ""} for _ in range(VIEWERS)]
    pending: list[set] = [set() for _ in range(VIEWERS)]
    start = time.process_time()
    for index, message in enumerate(messages):
        for turn_text, keys in zip(texts, pending, strict=True):
            keys.update(live.merge_tails(turn_text, [message]))
            if keys and (index % window == window - 1 or index == len(messages) - 1):
                for key in keys:
                    live.text_fragment(turn_text, key)
                keys.clear()
    return time.process_time() - start


def main() -> None:
    text = reply()
    messages = pushes(text)
    n = len(messages) * VIEWERS
    # Same HTML both ways, at the end of the reply.
    assert live_markdown.streaming_html(2, live.streaming_document(text)) == old_render(live.streaming_document(text))
    live.warm_up()
    b = before(messages)
    a = after(messages, 1)
    w = after(messages, WINDOW_PUSHES) if WINDOW_PUSHES > 1 else a
    print(
        f"reply {len(text)} characters, {len(messages)} pushes, {VIEWERS} viewer(s), window {WINDOW_PUSHES} push(es); "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| path | CPU ms per push (per viewer) |")
    print("|---|---|")
    print(f"| before: whole reply rendered per push, new Markdown instance | {b / n * 1000:.2f} |")
    print(f"| after: block by block, instance reused | {a / n * 1000:.2f} |")
    if WINDOW_PUSHES > 1:
        print(f"| after, {WINDOW_PUSHES} pushes merged per render (render window under load) | {w / n * 1000:.2f} |")


if __name__ == "__main__":
    main()
