"""The builder's references part: add reference documents (pasted or uploaded) and remove them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import team
from orchestration.forms import ReferenceForm
from orchestration.models import WritingSession
from orchestration.services import MAX_REFERENCES, ServiceError
from orchestration.uploads import MAX_UPLOAD_FILES, UploadError, parse_upload
from orchestration.views.builder_common import (
    PAGE,
    _references_context,
    _saved,
    draft_only,
    running_response,
)


@login_required
@require_POST
@draft_only(autosave=False)
def reference_add(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
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
@draft_only(autosave=False)
def reference_remove(request: AuthenticatedHttpRequest, session: WritingSession, ref_pk: int) -> HttpResponse:
    try:
        team.remove_reference(session=session, reference_id=ref_pk)
    except ServiceError:
        return running_response(request, session, autosave=False)
    if not request.htmx:
        return redirect("session_edit", pk=session.pk)
    return _saved(render(request, PAGE + "#references", _references_context(session)), session)
