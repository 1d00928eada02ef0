"""Dashboard and project pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import presets, services, team
from orchestration.forms import ProjectForm, credit_balance
from orchestration.models import (
    ACTIVE_STATUSES,
    Flow,
    Project,
    Status,
    TeamPreset,
    WritingSession,
)
from orchestration.views.access import _get_project_for_user, _get_session_for_user

if TYPE_CHECKING:
    from django.contrib.auth.models import User

RECENT_SESSIONS = 8


def _recent_sessions(user: User) -> list[WritingSession]:
    return list(
        WritingSession.objects.filter(project__owner=user)
        .exclude(flow=Flow.CONVERSATION)
        .select_related("project")
        .order_by("-updated_at")[:RECENT_SESSIONS]
    )


@login_required
@require_GET
def dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    recent = _recent_sessions(request.user)
    context = {
        "recent_sessions": recent,
        "any_active": any(s.status in ACTIVE_STATUSES for s in recent),
    }
    if request.htmx and request.GET.get("part") == "recent":
        # The periodic refresh while something runs: only the list, never the whole page.
        return render(request, "orchestration/dashboard.html#recent_sessions", context)
    projects = (
        Project.objects.filter(owner=request.user, archived_at__isnull=True)
        .annotate(
            session_count=Count("sessions", filter=~Q(sessions__flow=Flow.CONVERSATION)),
            active_count=Count(
                "sessions",
                filter=Q(sessions__status__in=ACTIVE_STATUSES) & ~Q(sessions__flow=Flow.CONVERSATION),
            ),
        )
        .order_by("-updated_at")
    )
    archived_count = Project.objects.filter(owner=request.user, archived_at__isnull=False).count()
    context.update(
        projects=projects,
        archived_count=archived_count,
        balance=credit_balance(request.user),
        form=ProjectForm(),
        is_new_user=not projects and not archived_count and not recent,
        demo_credits=presets.DEMO_RUN_CREDITS,
    )
    return render(request, "orchestration/dashboard.html", context)


@login_required
@require_POST
def demo_quickstart(request: AuthenticatedHttpRequest) -> HttpResponse:
    """One click from an empty dashboard to a ready-to-start session with the demo team."""
    preset = TeamPreset.objects.filter(owner=None, slug=presets.SHIPPED_PRESETS[0]["slug"]).first()
    if preset is None:
        presets.seed_presets()
        preset = TeamPreset.objects.get(owner=None, slug=presets.SHIPPED_PRESETS[0]["slug"])
    model = presets.demo_model()
    if model is None:
        messages.error(request, "The demo model is not available right now. Please try again later.")
        return redirect("dashboard")
    try:
        with transaction.atomic():
            project = services.create_project(owner=request.user, name="My first project")
            # The demo runs offline on the Demo model whatever the user's default is: no provider cost.
            session = team.create_session(
                user=request.user,
                project=project,
                title="Demo: bike lanes essay",
                brief=presets.DEMO_BRIEF,
                preset=preset,
                model=model,
            )
            items = [(presets.DEMO_REFERENCE_TITLE, presets.DEMO_REFERENCE, "")]
            services.add_references(session=session, user=request.user, items=items)  # indexed there too
    except services.ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard")
    return redirect("demo_ready", pk=session.pk)


def _demo_context(request: AuthenticatedHttpRequest, session: WritingSession) -> dict[str, Any]:
    from billing.pricing import estimate_session_credits

    low, high = estimate_session_credits(session)
    agents = list(session.agents.filter(active=True).select_related("model").prefetch_related("criteria"))
    return {
        "session": session,
        "agents": agents,
        "references": list(session.references.all()),
        "estimate": (low, high),
        "balance": credit_balance(request.user),
        "threshold_agent": session.threshold_agent,
    }


@login_required
@require_GET
def demo_ready(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """The short path after "Try the demo team": the brief, the team and Start on one screen."""
    session = _get_session_for_user(request, pk)
    if session.status != Status.DRAFT:
        return redirect("session_detail", pk=session.pk)
    return render(request, "orchestration/demo_ready.html", _demo_context(request, session))


@login_required
@require_POST
def demo_start(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Start a draft as it is (no settings form: the short path changes nothing)."""
    from orchestration import services

    session = _get_session_for_user(request, pk)
    if session.status != Status.DRAFT:
        return redirect("session_detail", pk=session.pk)
    try:
        services.start_session(session=session, user=request.user)
    except services.ServiceError as exc:
        context = _demo_context(request, session) | {"start_problem": str(exc)}
        return render(request, "orchestration/demo_ready.html", context, status=400)
    return redirect("session_detail", pk=session.pk)


@login_required
@require_http_methods(["GET", "POST"])
def project_create(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.create_project(
                owner=request.user, name=form.cleaned_data["name"], description=form.cleaned_data["description"]
            )
        except services.ServiceError as exc:
            form.add_error("name", exc.message)
        else:
            messages.success(request, f"Created “{project.name}”.")
            return redirect(project)
    return render(request, "orchestration/project_form.html", {"form": form})


def _project_sessions(project: Project, status: str) -> list[WritingSession]:
    sessions = project.sessions.exclude(flow=Flow.CONVERSATION).order_by("-created_at")
    if status == "active":
        sessions = sessions.filter(status__in=ACTIVE_STATUSES)
    elif status in Status.values:
        sessions = sessions.filter(status=status)
    return list(sessions)


@login_required
@require_GET
def project_detail(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    project = _get_project_for_user(request, pk)
    status = request.GET.get("status", "")
    if status and status != "active" and status not in Status.values:
        status = ""
    context = {
        "project": project,
        "sessions": _project_sessions(project, status),
        "status": status,
        "status_choices": [("", "All"), ("active", "Active"), *Status.choices],
        "rename_form": ProjectForm(instance=project),
    }
    if request.htmx and request.htmx.target == "project-sessions":
        return render(request, "orchestration/project_detail.html#project_sessions", context)
    return render(request, "orchestration/project_detail.html", context)


@login_required
@require_POST
def project_rename(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    project = _get_project_for_user(request, pk)
    form = ProjectForm(request.POST, instance=project)
    if form.is_valid():
        services.update_project(
            project=project, name=form.cleaned_data["name"], description=form.cleaned_data["description"]
        )
        if request.htmx:
            return render(
                request, "orchestration/project_detail.html#project_header", {"project": project, "rename_form": form}
            )
        messages.success(request, "Project renamed.")
        return redirect(project)
    if request.htmx:
        project.refresh_from_db()
        return render(
            request, "orchestration/project_detail.html#project_header", {"project": project, "rename_form": form}
        )
    return render(request, "orchestration/project_form.html", {"form": form, "project": project})


@login_required
@require_POST
def project_archive(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    project = _get_project_for_user(request, pk)
    if project.archived_at:
        messages.success(request, f"“{project.name}” is back on your dashboard.")
    else:
        messages.success(request, f"Archived “{project.name}”. Its sessions are kept.")
    services.set_project_archived(project=project, archived=project.archived_at is None)
    return redirect(project)


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    project = _get_project_for_user(request, pk)
    active = project.sessions.filter(status__in=ACTIVE_STATUSES).count()
    if request.method == "POST":
        if active:
            messages.error(request, "Stop the project's running sessions before deleting it.")
            return redirect(project)
        if request.POST.get("confirm_name", "").strip() != project.name:
            messages.error(request, "Type the project's name exactly to confirm deletion.")
            return render(
                request, "orchestration/project_confirm_delete.html", {"project": project, "active": active}, status=400
            )
        try:
            name = services.delete_project(project=project)
        except services.ServiceError as exc:
            messages.error(request, exc.message)
            return redirect(project)
        messages.success(request, f"Deleted “{name}” and its sessions.")
        return redirect("dashboard")
    return render(
        request,
        "orchestration/project_confirm_delete.html",
        {
            "project": project,
            "active": active,
            "session_count": project.sessions.exclude(flow=Flow.CONVERSATION).count(),
        },
    )


@login_required
@require_GET
def project_archived(request: AuthenticatedHttpRequest) -> HttpResponse:
    projects = Project.objects.filter(owner=request.user, archived_at__isnull=False).order_by("-archived_at")
    return render(request, "orchestration/project_archived.html", {"projects": projects})


SEARCH_LIMIT = 50


def search_sessions(user: User, query: str, status: str = "") -> list[WritingSession]:
    """The user's sessions whose title, brief, document or project name contains every word of `query`."""
    sessions = WritingSession.objects.filter(project__owner=user).exclude(flow=Flow.CONVERSATION)
    sessions = sessions.select_related("project")
    for word in query.split()[:8]:
        sessions = sessions.filter(
            Q(title__icontains=word)
            | Q(brief__icontains=word)
            | Q(project__name__icontains=word)
            | Q(document__icontains=word)
        )
    if status == "active":
        sessions = sessions.filter(status__in=ACTIVE_STATUSES)
    elif status in Status.values:
        sessions = sessions.filter(status=status)
    return list(sessions.order_by("-updated_at")[:SEARCH_LIMIT])


@login_required
@require_GET
def session_search(request: AuthenticatedHttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    status = request.GET.get("status", "")
    if status and status != "active" and status not in Status.values:
        status = ""
    context = {
        "query": query,
        "status": status,
        "status_choices": [("", "All"), ("active", "Active"), *Status.choices],
        "results": search_sessions(request.user, query, status) if (query or status) else [],
        "searched": bool(query or status),
        "limit": SEARCH_LIMIT,
    }
    if request.htmx and request.htmx.target == "search-results":
        return render(request, "orchestration/session_search.html#search_results", context)
    return render(request, "orchestration/session_search.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def session_delete(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    """Confirm, then delete a session (never while it runs)."""
    from orchestration import services

    session = _get_session_for_user(request, pk)
    running = session.status in ACTIVE_STATUSES
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            messages.error(request, "Tick the box to confirm the deletion.")
            return render(
                request,
                "orchestration/session_confirm_delete.html",
                {"session": session, "running": running},
                status=400,
            )
        project = session.project
        try:
            title = services.delete_session(session=session, user=request.user)
        except services.ServiceError as exc:
            messages.error(request, str(exc))
            return redirect("session_delete", pk=pk)
        messages.success(request, f"Deleted “{title}”.")
        return redirect(project)
    return render(
        request,
        "orchestration/session_confirm_delete.html",
        {"session": session, "running": running, "turn_count": session.turns.count()},
    )


urls = [
    path("dashboard/", dashboard, name="dashboard"),
    path("dashboard/demo/", demo_quickstart, name="demo_quickstart"),
    path("sessions/", session_search, name="session_search"),
    path("sessions/<int:pk>/delete/", session_delete, name="session_delete"),
    path("sessions/<int:pk>/demo/", demo_ready, name="demo_ready"),
    path("sessions/<int:pk>/demo/start/", demo_start, name="demo_start"),
    path("projects/new/", project_create, name="project_create"),
    path("projects/archived/", project_archived, name="project_archived"),
    path("projects/<int:pk>/", project_detail, name="project_detail"),
    path("projects/<int:pk>/rename/", project_rename, name="project_rename"),
    path("projects/<int:pk>/archive/", project_archive, name="project_archive"),
    path("projects/<int:pk>/delete/", project_delete, name="project_delete"),
]
