"""Template helpers for the document panel (included by the live session page and the document page)."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from orchestration import documents
from orchestration.models import Status, WritingSession
from orchestration.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    """Markdown -> nh3-sanitized HTML. The only way model text becomes HTML in templates."""
    return render_markdown(text or "")


@register.filter
def percent(ratio: float | None) -> str:
    if ratio is None:
        return ""
    value = ratio * 100
    if 0 < value < 1:
        return "<1%"
    return f"{value:.0f}%"


@register.filter
def can_restore(session: WritingSession) -> bool:
    return documents.can_restore(session)


@register.filter
def is_paused(session: WritingSession) -> bool:
    return session.status == Status.PAUSED


@register.simple_tag
def current_document(session: WritingSession) -> str:
    return documents.current_document(session)
