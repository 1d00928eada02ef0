"""Document panel: the current document, its versions, diffs, restore, exports and the human edit.

The panel template (orchestration/documents/panel.html) is included by the live session page; the
standalone page here shows the same panel, and its named partials answer htmx requests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

from atelier.core.http import AuthenticatedHttpRequest
from orchestration import documents
from orchestration.models import DocumentVersion, WritingSession
from orchestration.services import MAX_DOCUMENT_CHARS
from orchestration.views.access import _get_session_for_user, _get_session_for_viewer

PANEL = "orchestration/documents/panel.html"
PAGE = "orchestration/documents/page.html"


def _with_session(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Resolve the owner's session before anything else, so another user's id is a 404 for every method."""

    @wraps(view)
    def wrapper(request: AuthenticatedHttpRequest, pk: int, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            # Reading is also open to staff (the read-only live page refreshes this panel); writing never.
            session, request.atelier_read_only = _get_session_for_viewer(request, pk)
        else:
            session = _get_session_for_user(request, pk)
        return view(request, session, *args, **kwargs)

    return wrapper


def _next_url(request: AuthenticatedHttpRequest, session: WritingSession) -> str:
    """Where to go after a POST: back to the page the panel was on (live page or document page)."""
    candidate = request.POST.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("document_page", args=[session.pk])


def _get_version(session: WritingSession, number: int) -> DocumentVersion:
    return get_object_or_404(DocumentVersion, session=session, number=number)


# Version numbers are PositiveIntegerFields; a larger number in ?a= / ?b= made SQLite raise (a 500).
MAX_VERSION_NUMBER = 2_147_483_647


class DiffForm(forms.Form):
    a = forms.IntegerField(min_value=1, max_value=MAX_VERSION_NUMBER, label="From version")
    b = forms.IntegerField(min_value=1, max_value=MAX_VERSION_NUMBER, label="To version")
    mode = forms.ChoiceField(choices=[("inline", "Inline"), ("side", "Side by side")], required=False, initial="inline")

    def __init__(self, *args: Any, session: WritingSession, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session = session

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns (django-stubs allows None)
        if self.errors:
            return data
        found = {
            v.number: v
            for v in self.session.versions.filter(number__in={data["a"], data["b"]}).only("number", "content")
        }
        missing = sorted({data["a"], data["b"]} - found.keys())
        if missing:
            raise forms.ValidationError(
                "This session has no version %(numbers)s.",
                params={"numbers": ", ".join(f"v{n}" for n in missing)},
                code="missing",
            )
        data["version_a"], data["version_b"] = found[data["a"]], found[data["b"]]
        data["mode"] = data.get("mode") or "inline"
        return data


class HumanEditForm(forms.Form):
    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16}),
        required=False,
        strip=False,
        max_length=MAX_DOCUMENT_CHARS,  # the service's bound, checked here too: an oversized post is a form error
        label="Working document (Markdown)",
    )
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=10_000,
        label="Note for the next turn",
        help_text="The next agent sees your note and your edits.",
    )


def _panel_context(session: WritingSession, **extra: Any) -> dict[str, Any]:
    context = {"session": session, "versions": documents.versions_for_panel(session)}
    context.update(extra)
    return context


@login_required
@_with_session
@require_safe
def document_page(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    return render(request, PAGE, _panel_context(session))


@login_required
@_with_session
@require_safe
def version_detail(request: AuthenticatedHttpRequest, session: WritingSession, number: int) -> HttpResponse:
    version = _get_version(session, number)
    if request.htmx:
        return render(request, f"{PANEL}#version-view", {"session": session, "shown_version": version})
    return render(request, PAGE, _panel_context(session, shown_version=version))


@login_required
@_with_session
@require_safe
def version_diff(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    form = DiffForm(request.GET, session=session)
    context: dict[str, Any] = {"diff_form": form}
    if form.is_valid():
        a, b = form.cleaned_data["version_a"], form.cleaned_data["version_b"]
        context["diff"] = {
            "a": a,
            "b": b,
            "mode": form.cleaned_data["mode"],
            "html": documents.diff_versions(a.content, b.content, mode=form.cleaned_data["mode"]),
            "stats": documents.diff_stats(a.content, b.content),
        }
        status = 200
    else:
        # htmx only swaps 2xx responses by default; the error must still reach the user.
        status = 200 if request.htmx else 400
    if request.htmx:
        return render(request, f"{PANEL}#diff-result", {"session": session, **context}, status=status)
    return render(request, PAGE, _panel_context(session, **context), status=status)


@login_required
@_with_session
@require_POST
def version_restore(request: AuthenticatedHttpRequest, session: WritingSession, number: int) -> HttpResponse:
    version = _get_version(session, number)
    try:
        restored = documents.restore_version(session=session, version=version)
    except documents.DocumentError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Restored v{version.number}. It is now the working document as v{restored.number}.")
    return HttpResponseRedirect(_next_url(request, session))


_EXPORTS: dict[str, tuple[str, str]] = {
    "md": ("text/markdown; charset=utf-8", "md"),
    "html": ("text/html; charset=utf-8", "html"),
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
}


@login_required
@_with_session
@require_safe
def document_export(request: AuthenticatedHttpRequest, session: WritingSession, fmt: str) -> HttpResponse:
    if fmt not in _EXPORTS:
        raise Http404("Unknown export format.")
    if not documents.current_document(session).strip():
        # No empty files: the panel disables the buttons, and a direct request gets the same reason.
        return HttpResponse(
            "There is no document to export yet: the first turn writes it.",
            status=409,
            content_type="text/plain; charset=utf-8",
        )
    if fmt == "md":
        body: str | bytes = documents.export_markdown(session)
    elif fmt == "html":
        body = documents.export_html(session)
    else:
        body = documents.export_docx(session)
    content_type, extension = _EXPORTS[fmt]
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{documents.export_filename(session, extension)}"'
    if fmt == "html":
        # Opened from the server rather than saved, the file still may not run or load anything.
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'"
    return response


@login_required
@_with_session
@require_POST
def human_edit(request: AuthenticatedHttpRequest, session: WritingSession) -> HttpResponse:
    from orchestration import services  # lazily: the engine's services import the providers

    form = HumanEditForm(request.POST)
    if form.is_valid():
        try:
            services.apply_human_edit(
                session=session,
                user=request.user,
                # Browsers submit textareas with CRLF; without this every save would look like an edit.
                document=form.cleaned_data["document"].replace("\r\n", "\n"),
                note=form.cleaned_data["note"],
            )
        except services.ServiceError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, "Your edit and note are saved. The next turn will see them.")
            return HttpResponseRedirect(_next_url(request, session))
    # Re-render with the user's text intact so a refused edit is not lost.
    session.refresh_from_db()
    status = 409 if form.non_field_errors() else 400
    return render(request, PAGE, _panel_context(session, edit_form=form), status=status)


urls = [
    path("sessions/<int:pk>/document/", document_page, name="document_page"),
    path("sessions/<int:pk>/document/versions/<int:number>/", version_detail, name="document_version"),
    path("sessions/<int:pk>/document/versions/<int:number>/restore/", version_restore, name="document_restore"),
    path("sessions/<int:pk>/document/diff/", version_diff, name="document_diff"),
    path("sessions/<int:pk>/document/export.<str:fmt>", document_export, name="document_export"),
    path("sessions/<int:pk>/document/edit/", human_edit, name="document_edit"),
]
