"""The live session page and its controls: pause, resume, stop, continue."""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_POST, require_safe

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import events as ev
from orchestration import live, services
from orchestration.models import WritingSession
from orchestration.views.access import _get_session_for_user, _get_session_for_viewer

PAGE = "orchestration/session_detail.html"


class ContinueForm(forms.Form):
    extra_rounds = forms.IntegerField(min_value=1, max_value=services.MAX_CONTINUE_ROUNDS, initial=2)


@login_required
@require_safe
def session_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    session, read_only = _get_session_for_viewer(request, pk)
    context = live.page_context(session)
    context["continue_form"] = ContinueForm()
    context["read_only"] = read_only  # staff looking at someone else's session: no controls, no edits
    return render(request, PAGE, context)


@login_required
@require_safe
def session_events(request: AuthenticatedHttpRequest, pk: int) -> JsonResponse:
    """Catch-up over HTTP: every event after ?after=<seq> (the WebSocket does the same)."""
    session, _read_only = _get_session_for_viewer(request, pk)
    try:
        after = int(request.GET.get("after", "0"))
        if after < 0:
            raise ValueError
    except ValueError:
        return JsonResponse({"error": "`after` must be a non-negative integer."}, status=400)
    events = [ev.serialize(e) for e in ev.events_after(session.pk, after)]
    return JsonResponse({"events": events, "last_seq": events[-1]["seq"] if events else after})


def _control(request: AuthenticatedHttpRequest, pk: int, action: Callable[[WritingSession], object]) -> HttpResponse:
    """Run `action` on the owner's session (a 404 for anyone else's) and answer with the controls."""
    return _run_control(request, _get_session_for_user(request, pk), action)


def _staff_control(
    request: AuthenticatedHttpRequest, pk: int, action: Callable[[WritingSession], object]
) -> HttpResponse:
    """Stop or pause someone's session from the staff live view; anyone but active staff gets a 404."""
    if not (request.user.is_active and request.user.is_staff):
        raise Http404
    session, read_only = _get_session_for_viewer(request, pk)
    done = "Done: the owner sees that Atelier staff did it, and the admin log records it."
    return _run_control(request, session, action, read_only=read_only, success=done)


def _run_control(
    request: AuthenticatedHttpRequest,
    session: WritingSession,
    action: Callable[[WritingSession], object],
    *,
    read_only: bool = False,
    success: str = "",
) -> HttpResponse:
    """Run a control; a ServiceError becomes an error message (and `success`, if any, the message when it
    worked). htmx gets the page's controls part re-rendered, a plain form post a redirect to the page."""
    try:
        action(session)
    except services.ServiceError as error:
        messages.error(request, error.message)
    else:
        if success:
            messages.success(request, success)
    session.refresh_from_db()
    if request.htmx:
        context = live.page_context(session)
        context.update(continue_form=ContinueForm(), read_only=read_only)
        return render(request, PAGE + "#controls", context)
    return redirect(session.get_absolute_url())


@login_required
@require_POST
def staff_session_pause(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _staff_control(request, pk, lambda s: services.pause_session(session=s, by_staff=request.user))


@login_required
@require_POST
def staff_session_stop(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _staff_control(request, pk, lambda s: services.stop_session(session=s, by_staff=request.user))


@login_required
@require_POST
def session_pause(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, lambda s: services.pause_session(session=s))


@login_required
@require_POST
def session_resume(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    def act(session: WritingSession) -> None:
        blocked = live.resume_blocked(session)
        if blocked:  # it would pause again at once: say so instead of flipping the buttons back
            raise services.ServiceError(f"{blocked} Get more credits on the billing page, then resume.")
        services.resume_session(session=session, user=request.user)

    return _control(request, pk, act)


@login_required
@require_POST
def session_stop(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    return _control(request, pk, lambda s: services.stop_session(session=s))


@login_required
@require_POST
def session_continue(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    form = ContinueForm(request.POST)

    def act(session: WritingSession) -> None:
        if not form.is_valid():
            raise services.ServiceError(
                f"Continue for a whole number of rounds between 1 and {services.MAX_CONTINUE_ROUNDS}."
            )
        services.continue_session(session=session, extra_rounds=form.cleaned_data["extra_rounds"], user=request.user)

    return _control(request, pk, act)


@login_required
@require_POST
def session_approve_plan(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The planned flow's "approve plan" pause: approve the task graph shown on the page and run it."""
    return _control(request, pk, lambda s: services.approve_plan(session=s, user=request.user))


urls = [
    path("sessions/<int:pk>/", session_detail, name="session_detail"),
    path("sessions/<int:pk>/events/", session_events, name="session_events"),
    path("sessions/<int:pk>/pause/", session_pause, name="session_pause"),
    path("sessions/<int:pk>/resume/", session_resume, name="session_resume"),
    path("sessions/<int:pk>/stop/", session_stop, name="session_stop"),
    path("sessions/<int:pk>/continue/", session_continue, name="session_continue"),
    path("sessions/<int:pk>/staff/pause/", staff_session_pause, name="staff_session_pause"),
    path("sessions/<int:pk>/staff/stop/", staff_session_stop, name="staff_session_stop"),
    path("sessions/<int:pk>/approve-plan/", session_approve_plan, name="session_approve_plan"),
]
