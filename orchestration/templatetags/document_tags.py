"""Template helpers for the document panel (included by the live session page and the document page)."""

from __future__ import annotations

from django import template
from django.template.context import Context
from django.utils.safestring import SafeString
from django_htmx.middleware import HtmxDetails

from orchestration import documents
from orchestration.models import Status, WritingSession
from orchestration.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    """Markdown -> nh3-sanitized HTML. The only way model text becomes HTML in templates."""
    return render_markdown(text or "")


@register.filter
def cited_markdown(text: str | None, session: WritingSession) -> SafeString:
    """Like ``markdown``; in a pipeline session, citations [n] also link to their passages on the live page."""
    html = render_markdown(text or "")
    if getattr(session, "flow", "") != "pipeline":
        return html
    from django.urls import reverse
    from django.utils.safestring import mark_safe

    from orchestration.pipeline_report import link_citations, research_sources

    base = reverse("session_detail", args=[session.pk])
    return mark_safe(link_citations(str(html), research_sources(session.pk), base=base))  # noqa: S308 (sanitized)


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


@register.simple_tag(takes_context=True)
def panel_return_url(context: Context) -> str:
    """Where the panel's forms return to: the page showing the panel, also when the live page refreshed
    the panel over htmx from the document page (then the browser's URL is in HX-Current-URL)."""
    request = context.get("request")
    if request is None:
        return ""
    htmx: HtmxDetails | None = getattr(request, "htmx", None)
    if htmx and htmx.current_url_abs_path:
        return htmx.current_url_abs_path
    path: str = request.get_full_path()
    return path
