"""The session builder: one page, htmx partials for every part, nothing lost between requests.

Parts save themselves (settings and each agent card on change); a successful save swaps nothing
and only updates the status line, so typing is never interrupted. Errors re-render that part.

This module serves the page, its settings and Start; builder_team.py the agents and presets,
builder_references.py the reference documents, builder_common.py what they share (the guard that
keeps a running session's builder read-only, contexts, save helpers). `urls` lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from atelier.core.http import AuthenticatedHttpRequest, htmx_redirect
from orchestration import presets, team
from orchestration.forms import AgentForm, NewSessionForm, SessionSettingsForm, flow_options, gate
from orchestration.models import Agent, WritingSession
from orchestration.services import ServiceError
from orchestration.views import builder_references, builder_team
from orchestration.views.access import _get_project_for_user, _get_session_for_user
from orchestration.views.builder_common import (
    PAGE,
    _agent_card_context,
    _agent_forms,
    _agent_prefix,
    _error_labels,
    _estimate_context,
    _flow_check_context,
    _not_saved_text,
    _now,
    _page_context,
    _save_agent,
    _saved,
    _status_only,
    _with_status,
    draft_only,
    running_response,
)

if TYPE_CHECKING:
    from orchestration.views.builder_common import CriteriaFormSet

# --- pages


@login_required
@require_http_methods(["GET", "POST"])
def session_create(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    project = _get_project_for_user(request, pk)
    preset_list = list(presets.presets_for(request.user))
    form = NewSessionForm(request.POST or None, presets=preset_list, initial={"title": "Untitled session"})
    if request.method == "POST" and form.is_valid():
        preset = form.cleaned_data["preset"]
        verdict = gate(request.user, "use_flow", flow=preset.flow) if preset else None
        if verdict is not None and not verdict.allowed:
            form.add_error("preset", verdict.reason or "This team's flow is not on your plan.")
        else:
            from orchestration import services

            try:
                session = team.create_session(
                    user=request.user, project=project, title=form.cleaned_data["title"], preset=preset
                )
            except team.PresetUnusable as exc:
                form.add_error("preset", exc.message)
            except services.ServiceError as exc:
                form.add_error("title", exc.message)
            else:
                return redirect("session_edit", pk=session.pk)
    return render(request, "orchestration/session_new.html", {"project": project, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
@draft_only(autosave=True)
def session_edit(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    if request.method == "GET":
        return render(request, PAGE, _page_context(request, session))
    form = SessionSettingsForm(request.POST, instance=session, user=request.user)
    if form.is_valid():
        form.save()
        if not form.saved:  # Start won the race while this autosave was on its way
            return running_response(request, session, autosave=True)
        if request.htmx:
            text = f"Draft saved at {_now()}"
            if request.POST.get("had_errors"):
                # The form on screen still shows old errors: replace it, and say it saved.
                context = {
                    "session": session,
                    "settings_form": SessionSettingsForm(instance=session, user=request.user),
                    "flow_options": flow_options(request.user),
                    "save_message": text,
                    "oob": True,
                }
                return _saved(render(request, PAGE + "#settings_saved", context), session)
            return _saved(_status_only(request, session, text), session)
        messages.success(request, "Draft saved.")
        return redirect("session_edit", pk=session.pk)
    if request.htmx:
        context = {"session": session, "settings_form": form, "flow_options": flow_options(request.user)}
        response = render(request, PAGE + "#settings", context)
        response = _with_status(request, response, session, _not_saved_text("the session", _error_labels(form)))
        return reswap(retarget(response, "#settings"), "outerHTML")
    return render(request, PAGE, _page_context(request, session, settings_form=form))


@login_required
@require_POST
@draft_only(autosave=False)
def session_start(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    """Save what the page shows, then start. Start comes with the settings form and every agent card
    (`hx-include`), so a run never starts with a value other than the one on screen: if any field is
    invalid, nothing starts and the reply names each one (the valid parts are saved, nothing typed is lost)."""
    form = SessionSettingsForm(request.POST, instance=session, user=request.user)
    problems: list[str] = []
    valid_agents = []
    invalid_cards = []
    for agent in session.agents.order_by("order", "pk"):
        if f"{_agent_prefix(agent)}-name" not in request.POST:
            continue  # its card was not on the page that pressed Start (no JavaScript): the saved values count
        agent_form, formset = _agent_forms(request, agent, request.POST)
        if agent_form.is_valid() and formset.is_valid():
            valid_agents.append((agent_form, formset))
        else:
            problems.append(f"{agent.name}: fix {', '.join(_error_labels(agent_form, formset))}.")
            invalid_cards.append((agent, agent_form, formset))
    settings_valid = form.is_valid()
    if not settings_valid:
        problems.insert(0, f"Session: fix {', '.join(_error_labels(form))}.")
    try:
        with transaction.atomic():
            if settings_valid:
                form.save()
            for agent_form, formset in valid_agents:
                _save_agent(agent_form, formset)
    except ServiceError:  # another Start won meanwhile
        return running_response(request, session, autosave=False)
    if problems:
        problems.insert(0, "Not started: these fields are invalid, so they were not saved.")
        return _start_refused(request, session, form, problems, invalid_cards=invalid_cards)
    from orchestration import services  # engine owner's module; imported late so the builder loads without it

    try:
        services.start_session(session=session, user=request.user)
    except services.ServiceError as exc:
        return _start_refused(request, session, None, [str(exc)], upgrade_url=getattr(exc, "upgrade_url", ""))
    url = reverse("session_detail", args=[session.pk])
    return htmx_redirect(request, url)


def _start_refused(
    request: AuthenticatedHttpRequest,
    session: WritingSession,
    form: SessionSettingsForm | None,
    problems: list[str],
    *,
    invalid_cards: Iterable[tuple[Agent, AgentForm, CriteriaFormSet]] = (),
    upgrade_url: str = "",
) -> HttpResponse:
    """Start said no: show why next to the Start button (and re-render the parts that hold errors)."""
    session.refresh_from_db()
    if not request.htmx:
        for problem in problems:
            messages.error(request, problem)
        if form is not None and form.errors:
            return render(request, PAGE, _page_context(request, session, settings_form=form))
        return redirect("session_edit", pk=session.pk)
    if form is not None and form.errors:
        context = {
            "session": session,
            "settings_form": form,
            "flow_options": flow_options(request.user),
            "start_problems": problems,
        }
        response = reswap(retarget(render(request, PAGE + "#settings", context), "#settings"), "outerHTML")
    else:
        context = {"session": session, "start_problems": problems, "upgrade_url": upgrade_url}
        response = reswap(retarget(render(request, PAGE + "#start_problems", context), "#start-problems"), "outerHTML")
    for agent, agent_form, formset in invalid_cards:
        card = _agent_card_context(request, session, agent, agent_form, formset)
        card["card"]["oob"] = True
        response.content += render_to_string(PAGE + "#agent_card", card, request=request).encode()
    status = problems[0] if problems[0].startswith("Not started") else f"Not started: {problems[0]}"
    return _with_status(request, response, session, status)


@login_required
@require_GET
def session_estimate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    return render(request, PAGE + "#estimate", _estimate_context(session))


@login_required
@require_GET
def session_flow_check(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    return render(request, PAGE + "#flow_check", _flow_check_context(session))


@login_required
@require_GET
def threshold_field(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    form = SessionSettingsForm(instance=session, user=request.user)
    return render(request, PAGE + "#threshold_field", {"session": session, "settings_form": form})


@login_required
@require_POST
def session_duplicate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    from orchestration import services

    try:
        copy = presets.duplicate_session(session=session)
    except services.ServiceError as exc:
        messages.error(request, exc.message)
        url = reverse("session_detail", args=[session.pk])
        return htmx_redirect(request, url)
    messages.success(request, f"Created “{copy.title}”, a new draft with the same team and settings.")
    url = reverse("session_edit", args=[copy.pk])
    return htmx_redirect(request, url)


urls = [
    path("projects/<int:pk>/sessions/new/", session_create, name="session_create"),
    path("sessions/<int:pk>/edit/", session_edit, name="session_edit"),
    path("sessions/<int:pk>/start/", session_start, name="session_start"),
    path("sessions/<int:pk>/estimate/", session_estimate, name="session_estimate"),
    path("sessions/<int:pk>/flow-check/", session_flow_check, name="session_flow_check"),
    path("sessions/<int:pk>/threshold-field/", threshold_field, name="session_threshold_field"),
    path("sessions/<int:pk>/duplicate/", session_duplicate, name="session_duplicate"),
    path("sessions/<int:pk>/agents/add/", builder_team.agent_add, name="agent_add"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/", builder_team.agent_update, name="agent_update"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/remove/", builder_team.agent_remove, name="agent_remove"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/move/", builder_team.agent_move, name="agent_move"),
    path("sessions/<int:pk>/preset/", builder_team.preset_apply, name="session_preset_apply"),
    path("sessions/<int:pk>/preset/save/", builder_team.preset_save, name="session_preset_save"),
    path("sessions/<int:pk>/references/", builder_references.reference_add, name="reference_add"),
    path(
        "sessions/<int:pk>/references/<int:ref_pk>/remove/",
        builder_references.reference_remove,
        name="reference_remove",
    ),
    path("presets/", builder_team.preset_list, name="preset_list"),
    path("presets/<int:preset_pk>/delete/", builder_team.preset_delete, name="preset_delete"),
]
