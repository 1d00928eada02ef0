"""The session builder: one page, htmx partials for every part, nothing lost between requests.

Parts save themselves (settings and each agent card on change); a successful save swaps nothing
and only updates the status line, so typing is never interrupted. Errors re-render that part.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import presets, team
from orchestration.forms import (
    AgentForm,
    CriterionFormSet,
    NewSessionForm,
    PresetSaveForm,
    ReferenceForm,
    SessionSettingsForm,
    credit_balance,
    credit_estimate,
    flow_options,
    gate,
    model_options,
)
from orchestration.models import ACTIVE_STATUSES, Agent, TeamPreset, WritingSession
from orchestration.services import MAX_REFERENCES, ServiceError
from orchestration.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, UploadError, parse_upload
from orchestration.views.access import _get_agent_for_user, _get_project_for_user, _get_session_for_user

PAGE = "orchestration/builder.html"


# --- helpers


def _editable_session(request: AuthenticatedHttpRequest, pk: int) -> WritingSession:
    """The owner's session (a 404 for anyone else's), whatever its status: it does not refuse a running
    session. The writes do: they go through the team service, which raises ServiceError then."""
    session = _get_session_for_user(request, pk)
    return session


def _late_autosave_response(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    """An autosave that fires after Start (its debounce outlived the click) has nothing left to do:
    Start saved the same form first. Answer 204 so htmx leaves the page alone, with no stray message."""
    if request.htmx and request.method == "POST":
        return HttpResponse(status=204)
    return _locked_response(request, session)


def _locked_response(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    messages.info(request, "This session is running. Pause or stop it from the live page first.")
    url = reverse("session_detail", args=[session.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _agent_prefix(agent: Agent) -> str:
    return f"agent-{agent.pk}"


def _agent_forms(request: AuthenticatedHttpRequest, agent: Agent, data=None, extra_criteria: int = 0):
    prefix = _agent_prefix(agent)
    form = AgentForm(data, instance=agent, prefix=prefix, user=request.user)
    formset = CriterionFormSet(data, instance=agent, prefix=f"{prefix}-criteria")
    if data is None and extra_criteria:
        formset.extra = extra_criteria
        formset.forms  # noqa: B018 - build forms now that extra changed
    return form, formset


def _agent_card_context(
    request: AuthenticatedHttpRequest, session: WritingSession, agent: Agent, form, formset, **extra
) -> dict:
    agents = list(session.agents.order_by("order", "pk").values_list("pk", flat=True))
    index = agents.index(agent.pk) if agent.pk in agents else 0
    return {
        "session": session,
        "card": {
            "agent": agent,
            "form": form,
            "formset": formset,
            "is_first": index == 0,
            "is_last": index == len(agents) - 1,
            "number": index + 1,
        },
        **_model_context(request),
        **extra,
    }


def _team_context(request: AuthenticatedHttpRequest, session: WritingSession) -> dict[str, Any]:
    agents = list(session.agents.select_related("model", "fallback_model").prefetch_related("criteria"))
    cards = []
    for index, agent in enumerate(agents):
        form, formset = _agent_forms(request, agent)
        cards.append(
            {
                "agent": agent,
                "form": form,
                "formset": formset,
                "is_first": index == 0,
                "is_last": index == len(agents) - 1,
                "number": index + 1,
            }
        )
    agent_gate = gate(request.user, "create_agent", agents=len(agents) + 1)
    return {
        "session": session,
        "cards": cards,
        "agent_gate": agent_gate,
        "presets": presets.presets_for(request.user),
        **_model_context(request),
    }


def _model_context(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    options = model_options(request.user)
    upgrade = next((o.upgrade_url for o in options if o.locked and o.upgrade_url), "")
    return {"model_options": options, "model_upgrade_url": upgrade}


def _estimate_context(session: WritingSession) -> dict[str, Any]:
    estimate = credit_estimate(session)
    return {
        "session": session,
        "estimate": estimate if isinstance(estimate, tuple) else None,
        "estimate_problem": estimate if isinstance(estimate, str) else "",
        "estimate_available": estimate is not None,
    }


def _references_context(session: WritingSession, form: ReferenceForm | None = None, errors=(), added=0) -> dict:
    return {
        "session": session,
        "references": list(session.references.all()),
        "reference_form": form or ReferenceForm(),
        "upload_errors": list(errors),
        "added": added,
        "max_upload_mb": MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_upload_files": MAX_UPLOAD_FILES,
    }


def _flow_check_context(session: WritingSession) -> dict[str, Any]:
    """The flow's role checks on the current team, so the builder says what is missing before Start."""
    from orchestration.flows import get_policy

    agents = list(session.agents.filter(active=True))
    return {"session": session, "flow_problems": get_policy(session.flow).validate(session, agents) if agents else []}


def _page_context(request: AuthenticatedHttpRequest, session: WritingSession, settings_form=None) -> dict[str, Any]:
    return {
        "session": session,
        "project": session.project,
        "settings_form": settings_form or SessionSettingsForm(instance=session, user=request.user),
        "flow_options": flow_options(request.user),
        "preset_form": PresetSaveForm(),
        "balance": credit_balance(request.user),
        **_team_context(request, session),
        **_estimate_context(session),
        **_flow_check_context(session),
        **_references_context(session),
    }


def _saved(response: HttpResponse, session: WritingSession, *, agents_changed: bool = False) -> HttpResponse:
    """A save that changed what a run would cost: refresh the estimate (and the agent pickers)."""
    events = {"builder-changed": True}
    if agents_changed:
        events["agents-changed"] = True
    for name in events:
        trigger_client_event(response, name, after="swap")
    return response


def _status_only(request: AuthenticatedHttpRequest, session: WritingSession, text: str) -> HttpResponse:
    response = render(request, PAGE + "#save_status", {"session": session, "save_message": text, "oob": True})
    return reswap(response, "none")


def _with_status(
    request: AuthenticatedHttpRequest, response: HttpResponse, session: WritingSession, text: str
) -> HttpResponse:
    """Add the save status line (out of band) to a part's response: the server says what happened,
    the page never guesses it from the element the swap replaced."""
    status = render_to_string(
        PAGE + "#save_status", {"session": session, "save_message": text, "oob": True}, request=request
    )
    response.content = response.content + status.encode()
    return response


def _now() -> str:
    return timezone.localtime().strftime("%H:%M:%S")


def _save_agent(form: AgentForm, formset) -> bool:
    """Write a valid agent card (its form and criteria formset) through the team service; True when
    criterion rows were created or deleted. Raises ServiceError when the session started meanwhile."""
    changes = {name: form.cleaned_data[name] for name in (form._meta.fields or ()) if name in form.cleaned_data}
    deleted_forms = {id(f) for f in formset.deleted_forms}
    deleted = {f.instance.pk for f in formset.deleted_forms if f.instance.pk}
    specs = [
        team.CriterionSpec(
            name=f.cleaned_data["name"],
            weight=f.cleaned_data["weight"],
            description=f.cleaned_data.get("description", ""),
            id=f.instance.pk,
        )
        for f in formset.forms
        if f.has_changed() and id(f) not in deleted_forms and f.cleaned_data
    ]
    return team.update_agent(agent=form.instance, changes=changes, criteria=specs, delete_criteria=deleted)


def _error_labels(form, formset=None) -> list[str]:
    """The labels of the fields that hold errors, in form order ("Temperature", "Criterion 2 weight")."""
    labels = [str(form[name].label) if name in form.fields else "the form" for name in form.errors]
    if formset is not None:
        for index, errors in enumerate(formset.errors):
            for name in errors:
                field = formset.forms[index].fields.get(name)
                labels.append(f"criterion {index + 1} {str(field.label).lower() if field else name}")
        if formset.non_form_errors():
            labels.append("the criteria")
    return list(dict.fromkeys(labels))


def _not_saved_text(subject: str, labels: list[str]) -> str:
    return f"Not saved: {subject} has errors in {', '.join(labels)}. Fix the highlighted fields."


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
def session_edit(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _late_autosave_response(request, session)
    if request.method == "GET":
        return render(request, PAGE, _page_context(request, session))
    form = SessionSettingsForm(request.POST, instance=session, user=request.user)
    if form.is_valid():
        form.save()
        if not form.saved:  # Start won the race while this autosave was on its way
            return _late_autosave_response(request, session)
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
def session_start(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Save what the page shows, then start. Start comes with the settings form and every agent card
    (`hx-include`), so a run never starts with a value other than the one on screen: if any field is
    invalid, nothing starts and the reply names each one (the valid parts are saved, nothing typed is lost)."""
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked_response(request, session)
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
        return _locked_response(request, session)
    if problems:
        problems.insert(0, "Not started: these fields are invalid, so they were not saved.")
        return _start_refused(request, session, form, problems, invalid_cards=invalid_cards)
    from orchestration import services  # engine owner's module; imported late so the builder loads without it

    try:
        services.start_session(session=session, user=request.user)
    except services.ServiceError as exc:
        return _start_refused(request, session, None, [str(exc)], upgrade_url=getattr(exc, "upgrade_url", ""))
    url = reverse("session_detail", args=[session.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _start_refused(request, session, form, problems, *, invalid_cards=(), upgrade_url: str = "") -> HttpResponse:
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


# --- the team


@login_required
@require_POST
def agent_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked_response(request, session)
    from orchestration.services import ServiceError

    problem = ""
    try:
        team.add_default_agent(session=session, user=request.user)
    except ServiceError as exc:
        problem = exc.message
    return _team_response(request, session, problem=problem, agents_changed=not problem)


def _team_response(
    request: AuthenticatedHttpRequest, session: WritingSession, *, problem: str = "", agents_changed: bool = True
):
    if not request.htmx:
        if problem:
            messages.error(request, problem)
        return redirect("session_edit", pk=session.pk)
    context = {**_team_context(request, session), "team_problem": problem}
    response = render(request, PAGE + "#team", context)
    return _saved(response, session, agents_changed=agents_changed)


@login_required
@require_POST
def agent_update(request: AuthenticatedHttpRequest, pk: int, agent_pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _late_autosave_response(request, session)
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
            return _late_autosave_response(request, session)
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
        problems += [e for errors in formset.errors for es in errors.values() for e in es]
        problems += list(formset.non_form_errors())
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
def agent_remove(request: AuthenticatedHttpRequest, pk: int, agent_pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _late_autosave_response(request, session)
    agent = _get_agent_for_user(request, session, agent_pk)
    try:
        team.remove_agent(agent=agent)
    except ServiceError:
        return _late_autosave_response(request, session)
    return _team_response(request, session)


@login_required
@require_POST
def agent_move(request: AuthenticatedHttpRequest, pk: int, agent_pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _late_autosave_response(request, session)
    agent = _get_agent_for_user(request, session, agent_pk)
    direction = -1 if request.POST.get("direction") == "up" else 1
    try:
        team.move_agent(agent=agent, direction=direction)
    except ServiceError:
        return _late_autosave_response(request, session)
    return _team_response(request, session)


@login_required
@require_POST
def preset_apply(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked_response(request, session)
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
@require_POST
def session_duplicate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    from orchestration import services

    try:
        copy = presets.duplicate_session(session=session)
    except services.ServiceError as exc:
        messages.error(request, exc.message)
        url = reverse("session_detail", args=[session.pk])
        return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    messages.success(request, f"Created “{copy.title}”, a new draft with the same team and settings.")
    url = reverse("session_edit", args=[copy.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


# --- references


@login_required
@require_POST
def reference_add(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked_response(request, session)
    form = ReferenceForm(request.POST)
    files = request.FILES.getlist("files")
    errors: list[str] = []
    parsed = []
    existing = session.references.count()
    if len(files) > MAX_UPLOAD_FILES:
        errors.append(f"Upload at most {MAX_UPLOAD_FILES} files at a time; you chose {len(files)}.")
        files = []
    for upload in files:
        try:
            parsed.append(parse_upload(upload))
        except UploadError as exc:
            errors.append(str(exc))
    pasted = None
    if form.is_valid() and form.cleaned_data["content"].strip():
        pasted = (form.cleaned_data["title"], form.cleaned_data["content"].strip())
    if not files and pasted is None and not errors and form.is_valid():
        errors.append("Paste some text or choose a file to add a reference.")
    new_count = len(parsed) + (1 if pasted else 0)
    if existing + new_count > MAX_REFERENCES:  # a quick answer; the service re-checks under its locks
        errors.append(f"A session holds at most {MAX_REFERENCES} reference documents.")
        parsed, pasted = [], None
    items = [(item.title, item.content, item.filename) for item in parsed]
    if pasted:
        items.append((pasted[0], pasted[1], ""))
    from orchestration import services

    try:
        added = services.add_references(session=session, user=request.user, items=items)
    except services.ServiceError as exc:
        errors.append(exc.message)
        added = 0
    # Keep the pasted text when the paste itself failed validation; clear it once it is saved.
    keep_form = form if (not form.is_valid()) else None
    if not request.htmx:
        for error in errors:
            messages.error(request, error)
        if added:
            messages.success(request, f"Added {added} reference document{'s' if added != 1 else ''}.")
        return redirect("session_edit", pk=session.pk)
    response = render(request, PAGE + "#references", _references_context(session, keep_form, errors, added))
    return _saved(response, session) if added else response


@login_required
@require_POST
def reference_remove(request: AuthenticatedHttpRequest, pk: int, ref_pk: int) -> HttpResponse:
    session = _editable_session(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked_response(request, session)
    try:
        team.remove_reference(session=session, reference_id=ref_pk)
    except ServiceError:
        return _locked_response(request, session)
    if not request.htmx:
        return redirect("session_edit", pk=session.pk)
    return _saved(render(request, PAGE + "#references", _references_context(session)), session)


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


urls = [
    path("projects/<int:pk>/sessions/new/", session_create, name="session_create"),
    path("sessions/<int:pk>/edit/", session_edit, name="session_edit"),
    path("sessions/<int:pk>/start/", session_start, name="session_start"),
    path("sessions/<int:pk>/estimate/", session_estimate, name="session_estimate"),
    path("sessions/<int:pk>/flow-check/", session_flow_check, name="session_flow_check"),
    path("sessions/<int:pk>/threshold-field/", threshold_field, name="session_threshold_field"),
    path("sessions/<int:pk>/duplicate/", session_duplicate, name="session_duplicate"),
    path("sessions/<int:pk>/agents/add/", agent_add, name="agent_add"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/", agent_update, name="agent_update"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/remove/", agent_remove, name="agent_remove"),
    path("sessions/<int:pk>/agents/<int:agent_pk>/move/", agent_move, name="agent_move"),
    path("sessions/<int:pk>/preset/", preset_apply, name="session_preset_apply"),
    path("sessions/<int:pk>/preset/save/", preset_save, name="session_preset_save"),
    path("sessions/<int:pk>/references/", reference_add, name="reference_add"),
    path("sessions/<int:pk>/references/<int:ref_pk>/remove/", reference_remove, name="reference_remove"),
    path("presets/", preset_list, name="preset_list"),
    path("presets/<int:preset_pk>/delete/", preset_delete, name="preset_delete"),
]
