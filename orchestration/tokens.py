"""Token estimates for text no tokenizer counted. No imports from the rest of Atelier: billing,
prompts and the provider adapters all use this one function."""

from __future__ import annotations

import math

ASCII_CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Atelier's one token estimate, for whatever no tokenizer counted: fitting a prompt into a
    context window, the credit estimate before a run, and the usage of a call whose provider
    reported none (or that broke before reporting).

    ASCII text counts one token per ASCII_CHARS_PER_TOKEN (4) characters, rounded up: English prose
    is about 4 characters per token for OpenAI's tokenizers and a little less for Claude's (OpenAI's
    and Anthropic's tokenizer documentation). Every non-ASCII character (accents, CJK, emoji) counts
    as a whole token, which over-counts accented Latin text and is about right for CJK. Returns 0
    for empty text. Deliberately not low: an under-count fails a call or under-reserves its credits.
    """
    if not text:
        return 0
    non_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return math.ceil((len(text) - non_ascii) / ASCII_CHARS_PER_TOKEN) + non_ascii
