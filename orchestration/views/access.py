"""Owner-scoped lookups: the one place every view gets a project or session from a URL.

Another user's object is a 404, never a 403, so ids do not leak which objects exist.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404

from atelier.core.http import AuthenticatedHttpRequest
from orchestration.models import Agent, Project, WritingSession


def _get_project_for_user(request: AuthenticatedHttpRequest, pk: int) -> Project:
    return get_object_or_404(Project, pk=pk, owner_id=request.user.pk)


# A conversation's hidden session is reached through its conversation, never through the session pages.
_SESSIONS = WritingSession.objects.exclude(flow="conversation").select_related("project")


def _get_session_for_user(request: AuthenticatedHttpRequest, pk: int) -> WritingSession:
    return get_object_or_404(_SESSIONS, pk=pk, project__owner_id=request.user.pk)


def _get_agent_for_user(request: AuthenticatedHttpRequest, session: WritingSession, pk: int) -> Agent:
    """An agent of a session the caller already owns (checked again here for safety)."""
    return get_object_or_404(Agent, pk=pk, session=session, session__project__owner_id=request.user.pk)


def _get_session_for_viewer(request: AuthenticatedHttpRequest, pk: int) -> tuple[WritingSession, bool]:
    """(session, read_only) for pages that only show a session: its owner, or active staff read-only
    (the admin's "View on site"). Anyone else gets a 404. Never use it for a view that writes."""
    user = request.user
    if user.is_active and user.is_staff:
        session = get_object_or_404(_SESSIONS, pk=pk)
        return session, session.project.owner_id != user.pk
    return _get_session_for_user(request, pk), False
