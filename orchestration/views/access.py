"""Owner-scoped lookups: the one place every view gets a project or session from a URL.

Another user's object is a 404, never a 403, so ids do not leak which objects exist.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.shortcuts import get_object_or_404

from orchestration.models import Agent, Project, WritingSession


def _get_project_for_user(request: HttpRequest, pk: int) -> Project:
    return get_object_or_404(Project, pk=pk, owner_id=request.user.pk)


def _get_session_for_user(request: HttpRequest, pk: int) -> WritingSession:
    return get_object_or_404(WritingSession.objects.select_related("project"), pk=pk, project__owner_id=request.user.pk)


def _get_agent_for_user(request: HttpRequest, session: WritingSession, pk: int) -> Agent:
    """An agent of a session the caller already owns (checked again here for safety)."""
    return get_object_or_404(Agent, pk=pk, session=session, session__project__owner_id=request.user.pk)
