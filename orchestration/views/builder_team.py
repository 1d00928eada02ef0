"""The builder's team part: add, edit, remove and reorder agents; apply, save and delete team presets."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import presets, team
from orchestration.forms import PresetSaveForm
from orchestration.models import TeamPreset, WritingSession
from orchestration.services import ServiceError
from orchestration.views.access import _get_agent_for_user, _get_session_for_user
from orchestration.views.builder_common import (
    PAGE,
    _agent_card_context,
    _agent_forms,
    _agent_prefix,
    _error_labels,
    _not_saved_text,
    _now,
    _page_context,
    _save_agent,
    _saved,
    _status_only,
    _team_context,
    _with_status,
    draft_only,
    form_errors,
    running_response,
)


@login_required
@require_POST
@draft_only(autosave=False)
def agent_add(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    from orchestration.services import ServiceError

    problem = ""
    try:
        team.add_default_agent(session=session, user=request.user)
    except ServiceError as exc:
        problem = exc.message
    return _team_response(request, session, problem=problem, agents_changed=not problem)


def _team_response(
    request: AuthenticatedHttpRequest, session: WritingSession, *, problem: str = "", agents_changed: bool = True
) -> HttpResponse:
    if not request.htmx:
        if problem:
            messages.error(request, problem)
        return redirect("session_edit", pk=session.pk)
    context = {**_team_context(request, session), "team_problem": problem}
    response = render(request, PAGE + "#team", context)
    return _saved(response, session, agents_changed=agents_changed)


@login_required
@require_POST
@draft_only(autosave=True)
def agent_update(request: AuthenticatedHttpRequest, session: WritingSession, agent_pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, session, agent_pk)
    data = request.POST.copy()
    action = data.get("action", "")
    prefix = f"{_agent_prefix(agent)}-criteria"
    if action.startswith("remove_criterion-"):
        data[f"{prefix}-{action.removeprefix('remove_criterion-')}-DELETE"] = "on"
    add_row = action == "add_criterion"
    form, formset = _agent_forms(request, agent, data)
    if form.is_valid() and formset.is_valid():
        # A criterion row that was just created must learn its id (and a deleted one must go), or the
        # next autosave of the same row would create it again: re-render the card in those cases.
        try:
            rows_changed = _save_agent(form, formset)
        except ServiceError:  # Start won the race while this autosave was on its way
            return running_response(request, session, autosave=True)
        agent.refresh_from_db()
        if not request.htmx:  # without JavaScript: plain form posts, then back to the page
            messages.success(request, f"Saved {agent.name}.")
            return redirect("session_edit", pk=session.pk)
        text = f"{agent.name} saved at {_now()}"
        # A new model may bring or take away a reasoning control: re-render the card then (as for rows).
        if not action and not data.get("had_errors") and not rows_changed and "model" not in form.changed_data:
            return _saved(_status_only(request, session, text), session, agents_changed=True)
        form, formset = _agent_forms(request, agent, extra_criteria=1 if add_row else 0)
        response = render(request, PAGE + "#agent_card", _agent_card_context(request, session, agent, form, formset))
        return _saved(_with_status(request, response, session, text), session, agents_changed=True)
    if not request.htmx:
        problems = [
            f"{form[name].label if name in form.fields else name}: {e}" for name, es in form.errors.items() for e in es
        ]
        problems += [str(e) for errors in form_errors(formset) for es in errors.values() for e in es]
        problems += [str(e) for e in formset.non_form_errors()]
        for problem in problems:
            messages.error(request, f"{agent.name} was not saved. {problem}")
        return redirect("session_edit", pk=session.pk)
    if add_row:
        # Keep everything typed so far and show one more row; the errors stay visible.
        total = f"{prefix}-TOTAL_FORMS"
        data[total] = str(int(data.get(total, 0) or 0) + 1)
        form, formset = _agent_forms(request, agent, data)
        form.is_valid()
        formset.is_valid()
    response = render(request, PAGE + "#agent_card", _agent_card_context(request, session, agent, form, formset))
    response = _with_status(request, response, session, _not_saved_text(agent.name, _error_labels(form, formset)))
    return reswap(retarget(response, f"#agent-card-{agent.pk}"), "outerHTML")


@login_required
@require_POST
@draft_only(autosave=True)
def agent_remove(request: AuthenticatedHttpRequest, session: WritingSession, agent_pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, session, agent_pk)
    return _team_write(request, session, lambda: team.remove_agent(agent=agent))


@login_required
@require_POST
@draft_only(autosave=True)
def agent_move(request: AuthenticatedHttpRequest, session: WritingSession, agent_pk: int) -> HttpResponse:
    agent = _get_agent_for_user(request, session, agent_pk)
    direction = -1 if request.POST.get("direction") == "up" else 1
    return _team_write(request, session, lambda: team.move_agent(agent=agent, direction=direction))


def _team_write(
    request: AuthenticatedHttpRequest, session: WritingSession, write: Callable[[], object]
) -> HttpResponse:
    """Run a team service call and answer with the team part; a ServiceError means Start won the race."""
    try:
        write()
    except ServiceError:
        return running_response(request, session, autosave=True)
    return _team_response(request, session)


@login_required
@require_POST
@draft_only(autosave=False)
def preset_apply(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    preset_pk = request.POST.get("preset", "")
    problem = ""
    preset = presets.presets_for(request.user).filter(pk=preset_pk).first() if preset_pk.isdigit() else None
    try:
        if preset_pk == "blank":
            team.clear_team(session=session, user=request.user)
        elif preset is None:
            problem = "Pick a preset team."
        else:
            team.apply_preset(session=session, user=request.user, preset=preset)
    except ServiceError as exc:
        problem = exc.message
    session.refresh_from_db()
    if not request.htmx:
        if problem:
            messages.error(request, problem)
        return redirect("session_edit", pk=session.pk)
    context = {**_page_context(request, session), "team_problem": problem}
    return _saved(render(request, PAGE + "#builder_body", context), session, agents_changed=True)


@login_required
@require_POST
def preset_save(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    form = PresetSaveForm(request.POST)
    saved = None
    if form.is_valid():
        if not session.agents.exists():
            form.add_error(None, "Add at least one agent before saving the team.")
        else:
            try:
                saved = presets.save_team_as_preset(
                    session=session,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    replace=form.cleaned_data["replace"],
                )
            except presets.PresetNameTaken as exc:
                form.name_taken = True
                form.add_error("name", f"{exc} Pick another name, or tick “Replace” to overwrite it.")
            except presets.PresetError as exc:
                form.add_error("name", str(exc))
    if not request.htmx:
        if saved:
            messages.success(request, f"Saved the team as “{saved.name}”.")
        else:
            messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("session_edit", pk=session.pk)
    context = {"session": session, "preset_form": PresetSaveForm() if saved else form, "saved_preset": saved}
    return render(request, PAGE + "#preset_save", context)


@login_required
@require_GET
def preset_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The user's personal presets, with a way to delete them."""
    own = TeamPreset.objects.filter(owner=request.user).order_by("name")
    return render(request, "orchestration/preset_list.html", {"presets": own})


@login_required
@require_POST
def preset_delete(request: AuthenticatedHttpRequest, preset_pk: int) -> HttpResponse:
    # Someone else's (or a shipped) preset is a 404, like every other object that is not yours.
    get_object_or_404(TeamPreset, owner=request.user, pk=preset_pk).delete()
    messages.success(request, "Preset deleted.")
    return redirect("preset_list")
