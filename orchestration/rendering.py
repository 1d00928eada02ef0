"""Markdown -> sanitized HTML. Every path that shows model output goes through render_markdown."""

from __future__ import annotations

import threading

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "strong",
    "em",
    "b",
    "i",
    "u",
    "s",
    "del",
    "ins",
    "blockquote",
    "code",
    "pre",
    "ul",
    "ol",
    "li",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "sup",
    "sub",
    "span",
    "div",
}
_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}}


_SAFE_HREF_PREFIXES = ("http://", "https://", "mailto:", "#")


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # nh3 lets relative URLs through (only absolute ones are scheme-checked); model output has no
    # business linking into our own app or smuggling "java script:" variants, so keep absolute links only.
    if attribute == "href" and not value.strip().lower().startswith(_SAFE_HREF_PREFIXES):
        return None
    return value


def sanitize_html(html: str) -> str:
    # No <img>: images would load from other hosts. Links only to http(s)/mailto, never javascript:.
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        attribute_filter=_filter_attribute,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow ugc",
        strip_comments=True,
    )


_local = threading.local()


def _markdown() -> markdown.Markdown:
    # Building a Markdown instance with "extra" cost about as much as converting a short reply; one per
    # thread (an instance is not thread-safe), reset before each use, gives the same HTML.
    md = getattr(_local, "md", None)
    if md is None:
        md = _local.md = markdown.Markdown(extensions=["extra", "sane_lists"], output_format="html")
    return md


def render_markdown(text: str) -> SafeString:
    """Model text (Markdown) -> sanitized HTML, safe to insert into a page."""
    html = _markdown().reset().convert(text or "")
    return mark_safe(sanitize_html(html))  # noqa: S308 - sanitized by nh3 just above
