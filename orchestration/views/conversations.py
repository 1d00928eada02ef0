"""Conversation pages: list and search, the chat page, and the thin views behind its controls.

Every lookup is scoped to the signed-in owner (another user's conversation is a 404); every write calls one
service in orchestration.conversations.services. htmx requests get named partials; without JavaScript the
forms post and redirect. A refused message (a plan limit, a reply still streaming) comes back in the
composer with the text kept; limits answer 429.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from atelier.core.http import AuthenticatedHttpRequest
from orchestration.conversations import live
from orchestration.conversations import services as conversations
from orchestration.conversations.forms import AddSpecialistForm, ConversationSettingsForm, TeamAgentForm
from orchestration.conversations.models import Conversation, ConversationFlow
from orchestration.conversations.presets import CONVERSATION_PRESETS, TRIAGE
from orchestration.forms import gate, model_options
from orchestration.models import ACTIVE_STATUSES, Agent
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


def _page_context(conversation: Conversation, **extra: Any) -> dict[str, Any]:
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
    request: AuthenticatedHttpRequest,
    conversation: Conversation,
    *,
    draft: str = "",
    error: ServiceError | None = None,
    status: int = 200,
) -> HttpResponse:
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


# --- The team page: configure the conversation's triage agent and specialists ------------------------------


def _team_agent_for(conversation: Conversation, agent_pk: int) -> Agent:
    """An active agent of this (already owner-checked) conversation's team, else 404."""
    agent = (
        Agent.objects.select_related("model", "fallback_model")
        .filter(session_id=conversation.session_id, pk=agent_pk, active=True)
        .first()
    )
    if agent is None:
        raise Http404("No such agent in this conversation.")
    return agent


def _card(
    request: AuthenticatedHttpRequest, agent: Agent, team: list[Agent], form: TeamAgentForm | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "agent": agent,
        "form": form or TeamAgentForm(user=request.user, agent=agent, team=team),
        "is_triage": agent.role == TRIAGE,
        **extra,
    }


def _add_context(request: AuthenticatedHttpRequest, team: list[Agent], **extra: Any) -> dict[str, Any]:
    from billing.services import effective_plan, get_account

    specialists = sum(1 for a in team if a.role != TRIAGE)
    return {
        "specialists": specialists,
        "max_specialists": effective_plan(get_account(request.user)).max_specialists,
        "add_gate": gate(request.user, "team_specialists", specialists=specialists + 1),
        "add_form": AddSpecialistForm(),
        **extra,
    }


def _team_context(request: AuthenticatedHttpRequest, conversation: Conversation, **extra: Any) -> dict[str, Any]:
    session = conversation.session
    session.refresh_from_db()
    team = conversations.team(conversation)
    options = model_options(request.user)
    return {
        "conversation": conversation,
        "active": session.status in ACTIVE_STATUSES,
        "settings_form": ConversationSettingsForm(
            initial={"title": conversation.title, "max_handoffs": conversation.max_handoffs}
        ),
        "cards": [_card(request, agent, team) for agent in team],
        "model_options": options,
        "model_upgrade_url": next((o.upgrade_url for o in options if o.locked and o.upgrade_url), ""),
        **_add_context(request, team),
        **extra,
    }


def _team_partial(
    request: AuthenticatedHttpRequest, conversation: Conversation, partial: str, context: dict[str, Any], *, status: int
) -> HttpResponse:
    """htmx: the named partial (always 200, so htmx swaps it in with its errors); without JavaScript: the
    whole page with `status` (400 for a form error, 409 while a reply is being written)."""
    if request.htmx:
        return render(request, f"conversations/team.html#{partial}", context)
    return render(request, "conversations/team.html", context, status=status)


@login_required
@require_GET
def conversation_team(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The team page: the conversation's title and handoff limit, one card per agent, add a specialist."""
    conversation = _get_conversation_for_user(request, pk)
    return render(request, "conversations/team.html", _team_context(request, conversation))


@login_required
@require_POST
def conversation_team_settings(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    conversation = _get_conversation_for_user(request, pk)
    form = ConversationSettingsForm(request.POST)
    if form.is_valid():
        try:
            conversations.update_settings(
                conversation=conversation,
                user=request.user,
                title=form.cleaned_data["title"],
                max_handoffs=form.cleaned_data["max_handoffs"],
            )
        except ServiceError as error:
            context = _team_context(request, conversation, settings_form=form, settings_error=error.message)
            return _team_partial(request, conversation, "settings", context, status=_team_status(error))
        if not request.htmx:
            messages.success(request, "Saved. The next message uses these settings.")
            return redirect("conversation_team", pk=conversation.pk)
        context = _team_context(request, conversation, settings_saved=True)
        return _team_partial(request, conversation, "settings", context, status=200)
    context = _team_context(request, conversation, settings_form=form)
    return _team_partial(request, conversation, "settings", context, status=400)


def _team_status(error: ServiceError) -> int:
    return 409 if error.message == conversations.TEAM_BUSY else 400


@login_required
@require_POST
def conversation_team_agent(request: AuthenticatedHttpRequest, pk: int, agent_pk: int) -> HttpResponse:
    """Save one agent's card. Field errors come back in the card with what was typed kept."""
    conversation = _get_conversation_for_user(request, pk)
    agent = _team_agent_for(conversation, agent_pk)
    team = conversations.team(conversation)
    form: TeamAgentForm | None = TeamAgentForm(request.POST, user=request.user, agent=agent, team=team)
    assert form is not None
    status, extra = 400, dict[str, object]()
    if form.is_valid():
        try:
            agent = conversations.update_team_agent(
                conversation=conversation,
                user=request.user,
                agent_id=agent.pk,
                changes={field: form.cleaned_data[field] for field in conversations.TEAM_AGENT_FIELDS},
            )
        except ServiceError as error:
            status, extra = _team_status(error), {"error": error.message}
        else:
            if not request.htmx:
                messages.success(request, f"Saved {agent.name}. The next message uses it.")
                return redirect("conversation_team", pk=conversation.pk)
            team = conversations.team(conversation)
            agent = next(a for a in team if a.pk == agent.pk)
            form, status, extra = None, 200, {"saved": True}
    context = _team_context(request, conversation)
    context["card"] = _card(request, agent, team, form, **extra)
    context["cards"] = [context["card"] if c["agent"].pk == agent.pk else c for c in context["cards"]]
    return _team_partial(request, conversation, "agent", context, status=status)


@login_required
@require_POST
def conversation_team_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Add a specialist of the chosen kind. htmx: its card is appended (other cards keep unsaved edits) and
    the add box refreshed; a refusal (plan limit, a reply being written) shows in the add box."""
    conversation = _get_conversation_for_user(request, pk)
    form = AddSpecialistForm(request.POST)
    try:
        if not form.is_valid():
            raise ServiceError("Pick a kind of specialist from the list.")
        agent = conversations.add_specialist(
            conversation=conversation, user=request.user, kind=form.cleaned_data["kind"]
        )
    except ServiceError as error:
        context = _team_context(request, conversation, add_error=error, add_form=form)
        if request.htmx:
            response = render(request, "conversations/team.html#add", context)
            return reswap(retarget(response, "#add-specialist"), "outerHTML")
        return render(request, "conversations/team.html", context, status=_team_status(error))
    if not request.htmx:
        messages.success(request, f"Added {agent.name}. Set its model and prompt below.")
        return redirect(f"{reverse('conversation_team', args=[conversation.pk])}#agent-{agent.pk}")
    context = _team_context(request, conversation, oob=True, add_saved=agent.name)
    context["card"] = _card(request, agent, conversations.team(conversation))
    return render(request, "conversations/team_added.html", context)


@login_required
@require_POST
def conversation_team_remove(request: AuthenticatedHttpRequest, pk: int, agent_pk: int) -> HttpResponse:
    """Remove a specialist (not the triage agent). htmx: its card goes and the add box is refreshed."""
    conversation = _get_conversation_for_user(request, pk)
    agent = _team_agent_for(conversation, agent_pk)
    try:
        conversations.remove_specialist(conversation=conversation, user=request.user, agent_id=agent.pk)
    except ServiceError as error:
        context = _team_context(request, conversation)
        context["card"] = _card(request, agent, conversations.team(conversation), error=error.message)
        context["cards"] = [context["card"] if c["agent"].pk == agent.pk else c for c in context["cards"]]
        return _team_partial(request, conversation, "agent", context, status=_team_status(error))
    if not request.htmx:
        messages.success(request, f"Removed {agent.name}.")
        return redirect("conversation_team", pk=conversation.pk)
    context = _team_context(request, conversation, oob=True)
    return render(request, "conversations/team.html#add", context)


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
    path("conversations/<int:pk>/team/", conversation_team, name="conversation_team"),
    path("conversations/<int:pk>/team/settings/", conversation_team_settings, name="conversation_team_settings"),
    path("conversations/<int:pk>/team/add/", conversation_team_add, name="conversation_team_add"),
    path("conversations/<int:pk>/team/<int:agent_pk>/", conversation_team_agent, name="conversation_team_agent"),
    path(
        "conversations/<int:pk>/team/<int:agent_pk>/remove/", conversation_team_remove, name="conversation_team_remove"
    ),
]
