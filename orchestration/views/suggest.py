"""Suggest a team (issue 10, section 3): ask a planner model for a team, edit the proposal, accept it.

Three steps on one page: the request form (brief, goal, planner, with the credit estimate), the editable
proposal (with what the call cost), and accept, which replaces the draft's team. The logic lives in
orchestration.team_suggestion; these views load and authorize, call it, and render.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import team_suggestion as ts
from orchestration.forms import credit_balance
from orchestration.models import ACTIVE_STATUSES, WritingSession
from orchestration.suggestion_forms import ProposalForms, SuggestRequestForm, readable_errors
from orchestration.views.access import _get_session_for_user

PAGE = "orchestration/team_suggest.html"


def _request_form(
    request: AuthenticatedHttpRequest, session: WritingSession, data: QueryDict | None = None
) -> SuggestRequestForm:
    planners = ts.planner_options(request.user)
    initial = {"brief": session.brief or session.document[:2000]}
    return SuggestRequestForm(data, initial=initial, planners=planners, default=ts.default_planner(request.user))


def _estimate(request: AuthenticatedHttpRequest, session: WritingSession, form: SuggestRequestForm) -> dict[str, Any]:
    """The most one planner call can cost with what the form holds now (a repair may add one more call)."""
    model = form.planner_model() if form.is_bound else form.planners.get(str(form.fields["planner"].initial or ""))
    if model is None:
        return {"estimate": None}
    raw = form.data if form.is_bound else form.initial
    include = bool(raw.get("include_document")) if form.is_bound else True
    prompt = ts.build_planner_prompt(
        brief=str(raw.get("brief") or "")[: ts.MAX_BRIEF_CHARS],
        goal=str(raw.get("goal") or "")[: ts.MAX_GOAL_CHARS],
        document=session.document[: ts.MAX_DOCUMENT_EXCERPT_CHARS] if include else "",
        limits=ts.limits_for(request.user),
        allowed_flows=ts.allowed_flows(request.user),
        model=model,
    )
    return {"estimate": ts.estimate_credits(model=model, prompt=prompt), "planner": model}


def _model_choices(request: AuthenticatedHttpRequest) -> list[tuple[str, str]]:
    names = {f"{m.provider}:{m.model_id}": m.display_name for m in ts.planner_options(request.user)}
    return [(ref, names.get(ref, ref)) for ref in ts.limits_for(request.user).models]


def _context(request: AuthenticatedHttpRequest, session: WritingSession, **extra: Any) -> dict[str, Any]:
    return {
        "session": session,
        "project": session.project,
        "team_size": session.agents.count(),
        "balance": credit_balance(request.user),
        **extra,
    }


def _locked(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    messages.info(request, "This session is running. Pause or stop it from the live page first.")
    return redirect("session_detail", pk=session.pk)


@login_required
@require_http_methods(["GET", "POST"])
def suggest(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """GET: the request form with the estimate. POST: ask the planner; show the editable proposal or the error."""
    session = _get_session_for_user(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked(request, session)
    form = _request_form(request, session, request.POST if request.method == "POST" else None)
    if request.method == "GET" or not form.is_valid() or form.planner_model() is None:
        return render(request, PAGE, _context(request, session, form=form, **_estimate(request, session, form)))
    data = form.cleaned_data
    planner = form.planner_model()
    assert planner is not None  # checked just above
    try:
        suggestion = ts.suggest_team(
            session=session,
            user=request.user,
            model=planner,
            brief=data["brief"],
            goal=data["goal"],
            document=session.document if data["include_document"] else "",
        )
    except ts.SuggestionError as error:
        context = _context(
            request,
            session,
            form=form,
            suggest_error=error,
            error_lines=readable_errors(error.errors, error.agent_names),
            **_estimate(request, session, form),
        )
        return render(request, PAGE, context)
    edit = ProposalForms(
        proposal=suggestion.proposal,
        brief=data["brief"],
        model_choices=_model_choices(request),
        allowed_flows=ts.allowed_flows(request.user),
    )
    return render(request, PAGE, _context(request, session, suggestion=suggestion, edit=edit))


@login_required
@require_POST
def accept(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Validate the edited proposal again and replace the draft's team with it (after the user confirmed)."""
    session = _get_session_for_user(request, pk)
    if session.status in ACTIVE_STATUSES:
        return _locked(request, session)
    edit = ProposalForms(
        data=request.POST, model_choices=_model_choices(request), allowed_flows=ts.allowed_flows(request.user)
    )
    problems: list[str] = []
    proposal = None
    if not edit.is_valid():
        problems.append("Some fields are not valid: fix the highlighted ones.")
    else:
        try:
            proposal = ts.parse_proposal(edit.proposal_data(), limits=ts.limits_for(request.user))
        except ts.ProposalInvalid as error:
            names = [a.cleaned_data.get("name", "") for a, _ in edit.agents if a.cleaned_data.get("keep")]
            problems += readable_errors(error.errors, names)
    team_size = session.agents.count()
    if proposal is not None and team_size and not edit.settings.cleaned_data.get("confirm_replace"):
        problems.append(f"Tick “Replace the current team” to replace the {team_size} agents this session has.")
    upgrade_url = ""
    if proposal is not None and not problems:
        try:
            ts.accept_proposal(
                session=session, user=request.user, proposal=proposal, brief=edit.settings.cleaned_data.get("brief", "")
            )
        except ts.SuggestionError as error:
            problems.append(error.message)
            problems += error.errors
            upgrade_url = error.upgrade_url
        else:
            count = len(proposal.agents)
            messages.success(
                request,
                f"Accepted the suggested team: {count} agent{'s' if count != 1 else ''}. Review it, then start.",
            )
            return redirect("session_edit", pk=session.pk)
    context = _context(request, session, edit=edit, accept_problems=problems, upgrade_url=upgrade_url)
    return render(request, PAGE, context, status=200)


@login_required
@require_GET
def estimate(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The estimate line for the request form as it stands (htmx, on change)."""
    session = _get_session_for_user(request, pk)
    form = _request_form(request, session, request.GET)
    context = {"session": session, "balance": credit_balance(request.user), **_estimate(request, session, form)}
    return render(request, PAGE + "#suggest_estimate", context)


urls = [
    path("sessions/<int:pk>/suggest/", suggest, name="team_suggest"),
    path("sessions/<int:pk>/suggest/accept/", accept, name="team_suggest_accept"),
    path("sessions/<int:pk>/suggest/estimate/", estimate, name="team_suggest_estimate"),
]
