"""Conversation pages: list and search, the chat page, and the thin views behind its controls.

Every lookup is scoped to the signed-in owner (another user's conversation is a 404); every write calls one
service in orchestration.conversations.services. htmx requests get named partials; without JavaScript the
forms post and redirect. A refused message (a plan limit, a reply still streaming) comes back in the
composer with the text kept; limits answer 429.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from atelier.core.http import AuthenticatedHttpRequest
from orchestration.conversations import live
from orchestration.conversations import services as conversations
from orchestration.conversations.models import Conversation, ConversationFlow
from orchestration.conversations.presets import CONVERSATION_PRESETS
from orchestration.models import ACTIVE_STATUSES
from orchestration.services import ServiceError
from orchestration.views.access import _get_project_for_user

MAX_QUERY_CHARS = 200


def _get_conversation_for_user(request: AuthenticatedHttpRequest, pk: int) -> Conversation:
    try:
        return conversations.get_conversation(user=request.user, pk=pk)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None


@login_required
@require_GET
def conversation_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Every conversation of the user, or search results for ?q= (titles and message text)."""
    query = request.GET.get("q", "").strip()[:MAX_QUERY_CHARS]
    project = None
    if request.GET.get("project", "").isdigit():
        project = _get_project_for_user(request, int(request.GET["project"]))
    context = {
        "query": query,
        "project": project,
        "hits": conversations.search(user=request.user, query=query, project=project) if query else None,
        "conversations": conversations.conversations_for(user=request.user, project=project)[:200],
        "presets": CONVERSATION_PRESETS,
    }
    if request.htmx and request.htmx.target == "conversation-results":
        return render(request, "conversations/list.html#results", context)
    return render(request, "conversations/list.html", context)


@login_required
@require_POST
def conversation_create(request: AuthenticatedHttpRequest, project_pk: int) -> HttpResponse:
    project = _get_project_for_user(request, project_pk)
    try:
        conversation = conversations.create_conversation(
            project=project,
            user=request.user,
            title=request.POST.get("title", ""),
            preset=request.POST.get("preset", "writing-desk")[:40],
        )
    except ServiceError as error:
        messages.error(request, error.message)
        return redirect(f"/conversations/?project={project.pk}")
    return redirect(conversation)


def _page_context(conversation: Conversation, **extra) -> dict:
    session = conversation.session
    session.refresh_from_db()
    return {
        "conversation": conversation,
        "session": session,
        "transcript": conversations.transcript(conversation),
        "streams": live.streaming_turns(session.pk),
        "team": conversations.team(conversation),
        "active": session.status in ACTIVE_STATUSES,
        "last_seq": session.last_seq,
        "draft": "",
        "flows": ConversationFlow.choices,
        **extra,
    }


@login_required
@require_GET
def conversation_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    return render(request, "conversations/detail.html", _page_context(conversation))


def _composer(
    request: AuthenticatedHttpRequest, conversation: Conversation, *, draft: str = "", error=None, status: int = 200
):
    """The composer after a post: cleared on success, the text kept with the reason on a refusal."""
    context = _page_context(conversation, draft=draft, error=error)
    if request.htmx:
        return render(request, "conversations/detail.html#composer", context, status=status)
    if error is not None:
        return render(request, "conversations/detail.html", context, status=status)
    return redirect(conversation)


def _refusal_status(error: ServiceError) -> int:
    return getattr(error, "status_code", 409 if "still being written" in error.message else 400)


@login_required
@require_POST
def conversation_send(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    text = request.POST.get("text", "")
    try:
        conversations.send_message(conversation=conversation, user=request.user, text=text)
    except ServiceError as error:
        return _composer(request, conversation, draft=text, error=error, status=_refusal_status(error))
    return _composer(request, conversation)


@login_required
@require_POST
def conversation_edit_last(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    text = request.POST.get("text", "")
    try:
        conversations.edit_last_message(conversation=conversation, user=request.user, text=text)
    except ServiceError as error:
        return _composer(request, conversation, draft=text, error=error, status=_refusal_status(error))
    return _composer(request, conversation)


@login_required
@require_POST
def conversation_regenerate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    try:
        conversations.regenerate_reply(conversation=conversation, user=request.user)
    except ServiceError as error:
        return _composer(request, conversation, error=error, status=_refusal_status(error))
    return _composer(request, conversation)


@login_required
@require_POST
def conversation_stop(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    conversations.stop_reply(conversation=conversation, user=request.user)
    if request.htmx:
        session = conversation.session
        session.refresh_from_db()
        return HttpResponse(live.controls_html(conversation, session))
    return redirect(conversation)


@login_required
@require_POST
def conversation_flow(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Switch the flow that answers the next messages (triage | pipeline); refused while a reply streams."""
    conversation = _get_conversation_for_user(request, pk)
    try:
        conversations.switch_flow(conversation=conversation, user=request.user, flow=request.POST.get("flow", ""))
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect(conversation)


@login_required
@require_POST
def conversation_rename(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    try:
        conversations.rename_conversation(
            conversation=conversation, user=request.user, title=request.POST.get("title", "")
        )
    except ServiceError as error:
        messages.error(request, error.message)
    return redirect(conversation)


@login_required
@require_http_methods(["GET", "POST"])
def conversation_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    if request.method == "POST":
        project_pk, title = conversation.project_id, conversation.title
        conversations.delete_conversation(conversation=conversation, user=request.user)
        messages.success(request, f"Deleted the conversation “{title}”.")
        return redirect(f"/conversations/?project={project_pk}")
    return render(request, "conversations/confirm_delete.html", {"conversation": conversation})


urls = [
    path("conversations/", conversation_list, name="conversation_list"),
    path("projects/<int:project_pk>/conversations/new/", conversation_create, name="conversation_create"),
    path("conversations/<int:pk>/", conversation_detail, name="conversation_detail"),
    path("conversations/<int:pk>/send/", conversation_send, name="conversation_send"),
    path("conversations/<int:pk>/edit-last/", conversation_edit_last, name="conversation_edit_last"),
    path("conversations/<int:pk>/regenerate/", conversation_regenerate, name="conversation_regenerate"),
    path("conversations/<int:pk>/stop/", conversation_stop, name="conversation_stop"),
    path("conversations/<int:pk>/flow/", conversation_flow, name="conversation_flow"),
    path("conversations/<int:pk>/rename/", conversation_rename, name="conversation_rename"),
    path("conversations/<int:pk>/delete/", conversation_delete, name="conversation_delete"),
]
