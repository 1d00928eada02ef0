"""A streaming reply's Markdown, rendered for the live page without redoing the whole reply on every push.

While a turn streams, the page gets the turn's whole body again about 20 times a second; rendering the
whole reply each time (Markdown + sanitizing) cost the web process ~1 ms per KiB per push per viewer
(issue 15). Most of a reply is finished paragraphs that no later text can change, so their HTML is kept:
`streaming_html` re-renders only the blocks after the last *safe boundary* and reuses the HTML of the text
before it, shared by every viewer of the turn in this process. The result is the same HTML as
`render_markdown` of the whole text (tests/orchestration/test_live_rendering.py compares them on generated
documents).

A safe boundary is a blank line ("\\n\\n", a non-blank character before it) followed by a block that starts
with a letter: Python-Markdown splits blocks at blank lines, and such a block cannot join the one before it
(list items, indented continuations, quotes, definitions and blank runs all start otherwise). Constructs
whose meaning crosses blocks — reference links, footnotes, abbreviations, fenced code, raw HTML,
attribute lists, definition lists — turn the reuse off for the whole text (it is rendered whole, as before).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from django.utils.safestring import SafeString, mark_safe

from orchestration.rendering import render_markdown

# Anything whose rendering can depend on text in another block: link / footnote / abbreviation
# definitions and uses, fences, raw HTML, attribute lists, definition-list items, quotes, odd whitespace.
_CROSS_BLOCK = re.compile(r"\]:|\[\^|\*\[|<|>|```|~~~|\{|\r|\x02|\x03|(?:^|\n) {0,3}:", re.MULTILINE)
_MAX_BOUNDARY_TRIES = 64
_MAX_ENTRIES = 512  # turns whose finished paragraphs are kept (one entry per streaming turn and kind)

# key -> (prefix, prefix html, last document, its html): shared by every connection of the process.
_cache: OrderedDict[object, tuple[str, str, str, str]] = OrderedDict()
_lock = threading.Lock()  # renders run on the event loop and in database_sync_to_async threads


def _boundary_at(document: str, index: int) -> bool:
    """True if a block boundary at `index` (just after "\\n\\n") separates blocks that cannot interact."""
    return (
        index > 2
        and index < len(document)
        and document[index - 2 : index] == "\n\n"
        and not document[index - 3].isspace()
        and document[index].isalpha()
    )


def _last_boundary(document: str) -> int | None:
    """The position of the last safe boundary (the start of the block after it), or None."""
    end = len(document) - 1
    for _ in range(_MAX_BOUNDARY_TRIES):
        found = document.rfind("\n\n", 0, end)
        if found < 0:
            return None
        if _boundary_at(document, found + 2):
            return found + 2
        end = found + 1  # an earlier pair (rfind looks for one ending before `end`)
    return None


def streaming_html(key: object, document: str) -> SafeString:
    """Sanitized HTML of `document` (Markdown), equal to render_markdown(document), reusing earlier work.

    `key` names the text being streamed (a turn id, or ("reasoning", id)); the HTML of its finished blocks
    is kept between calls, so a push re-renders only the text after the last safe boundary. Safe to call
    from several threads. Never raises for odd input: text it cannot split safely is rendered whole.
    """
    with _lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
    if entry is not None and entry[2] == document:
        return mark_safe(entry[3])  # noqa: S308 - rendered by render_markdown (sanitized)
    boundary = _last_boundary(document) if not _CROSS_BLOCK.search(document) else None
    if boundary is None:
        html = str(render_markdown(document))
        prefix, prefix_html = "", ""
    else:
        prefix = document[: boundary - 2]
        if entry is not None and entry[0] and prefix == entry[0]:
            prefix_html = entry[1]
        elif entry is not None and entry[0] and prefix.startswith(entry[0]) and _boundary_at(prefix, len(entry[0]) + 2):
            prefix_html = entry[1] + "\n" + render_markdown(prefix[len(entry[0]) + 2 :])
        else:
            prefix_html = str(render_markdown(prefix))
        html = prefix_html + "\n" + render_markdown(document[boundary:])
    with _lock:
        _cache[key] = (prefix, prefix_html, document, html)
        _cache.move_to_end(key)
        while len(_cache) > _MAX_ENTRIES:
            _cache.popitem(last=False)
    return mark_safe(html)  # noqa: S308 - every part was rendered by render_markdown (sanitized)


def forget(key: object) -> None:
    """Drop what is kept for `key` (its turn ended); harmless if nothing is."""
    with _lock:
        _cache.pop(key, None)
