"""Template helpers for the live session page."""

from __future__ import annotations

import re

from django import template

register = template.Library()


def _norm(text: str) -> str:
    return re.sub(r"[\s.…]+", " ", text or "").strip().casefold()


@register.filter
def detail_beyond(detail: str, headline: str) -> str:
    """The part of a stop detail that does not repeat its headline.

    "Stopped by you." under "Stopped by you" says nothing new (""); "Out of credits. It carries on by
    itself…" under "Out of credits" keeps only "It carries on by itself…".
    """
    detail, head = (detail or "").strip(), _norm(str(headline))
    if not head or not _norm(detail).startswith(head):
        return detail
    # Drop the words of the headline from the front of the detail, then the punctuation after them.
    words = len(head.split())
    rest = detail.split(None, words)
    return rest[words].lstrip(" .…") if len(rest) > words else ""
