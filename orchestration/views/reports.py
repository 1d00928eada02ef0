"""Flow reports as Markdown exports and JSON, for the session's owner only: the roundtable's convergence
report, the pipeline's run report and the planned flow's run summary."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import path
from django.utils.text import slugify
from django.views.decorators.http import require_safe

from atelier.core.http import AuthenticatedHttpRequest
from orchestration.flows.roundtable import convergence_report, report_markdown
from orchestration.models import Flow
from orchestration.views.access import _get_session_for_user


@login_required
@require_safe
def session_report(request: AuthenticatedHttpRequest, pk: int, fmt: str) -> HttpResponse:
    session = _get_session_for_user(request, pk)
    if fmt not in ("md", "json"):
        raise Http404("The report exports as .md or .json.")
    name = slugify(session.title)[:60] or "session"
    if session.flow == Flow.PIPELINE:
        from orchestration.pipeline_report import pipeline_report
        from orchestration.pipeline_report import report_markdown as pipeline_markdown

        pipeline = pipeline_report(session)
        if fmt == "json":
            return JsonResponse({"session": session.pk, "title": session.title, **pipeline.as_dict()})
        response = HttpResponse(pipeline_markdown(session, pipeline), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}-pipeline-report.md"'
        return response
    if session.flow == Flow.PLANNED:
        from orchestration.flows.planned import run_summary, summary_markdown

        summary = run_summary(session)
        if fmt == "json":
            return JsonResponse({"session": session.pk, "title": session.title, **summary})
        response = HttpResponse(summary_markdown(session, summary), content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}-run-summary.md"'
        return response
    if session.flow != Flow.ROUNDTABLE:
        raise Http404("Only roundtable, pipeline and planned sessions have a report.")
    report = convergence_report(session)
    if fmt == "json":
        return JsonResponse({"session": session.pk, "title": session.title, **report.as_dict()})
    response = HttpResponse(report_markdown(session, report), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-convergence-report.md"'
    return response


urls = [path("sessions/<int:pk>/report.<str:fmt>", session_report, name="session_report")]
