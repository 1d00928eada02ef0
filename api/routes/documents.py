"""A session's document: the current text, its versions, a diff between two, and exports."""

import difflib
from typing import Any

from django.http import HttpResponse
from ninja import Router

from api.errors import ApiError
from api.routes.common import paginate
from api.routes.sessions import owned_session
from api.schemas import ERRORS, DiffOut, DocumentOut, Page, VersionOut, VersionSummary
from atelier.core.http import AuthenticatedHttpRequest
from orchestration import documents
from orchestration.models import DocumentVersion, WritingSession

router = Router(tags=["documents"])

EXPORTS: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class VersionPage(Page):
    items: list[VersionSummary]


def _version(session: WritingSession, number: int) -> DocumentVersion:
    version = session.versions.filter(number=number).first()
    if version is None:
        raise ApiError(404, f"This session has no version {number}.")
    return version


@router.get("/{int:session_id}/document", response={200: DocumentOut, **ERRORS}, summary="The current document")
def get_document(request: AuthenticatedHttpRequest, session_id: int) -> dict[str, Any]:
    session = owned_session(request, session_id)
    content = documents.current_document(session)
    latest = session.versions.order_by("-number").values_list("number", flat=True).first()
    return {
        "session_id": session.pk,
        "content": content,
        "characters": len(content),
        "version": latest,
        "status": session.status,
    }


@router.get("/{int:session_id}/versions", response={200: VersionPage, **ERRORS}, summary="Document versions")
def list_versions(
    request: AuthenticatedHttpRequest, session_id: int, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    session = owned_session(request, session_id)
    return paginate(documents.versions_for_panel(session), limit=limit, offset=offset)


@router.get("/{int:session_id}/versions/{int:number}", response={200: VersionOut, **ERRORS}, summary="One version")
def get_version(request: AuthenticatedHttpRequest, session_id: int, number: int) -> DocumentVersion:
    return _version(owned_session(request, session_id), number)


@router.get("/{int:session_id}/diff", response={200: DiffOut, **ERRORS}, summary="Diff two versions")
def diff_versions(
    request: AuthenticatedHttpRequest, session_id: int, from_version: int, to_version: int
) -> dict[str, Any]:
    """``unified``: a unified diff of the lines; ``html``: the page's word-level inline diff (sanitized);
    ``stats``: words added / removed / unchanged, as the page shows."""
    session = owned_session(request, session_id)
    a, b = _version(session, from_version), _version(session, to_version)
    unified = "".join(
        difflib.unified_diff(
            a.content.splitlines(keepends=True),
            b.content.splitlines(keepends=True),
            fromfile=f"v{a.number}",
            tofile=f"v{b.number}",
        )
    )
    return {
        "from_version": a.number,
        "to_version": b.number,
        "stats": documents.diff_stats(a.content, b.content),
        "unified": unified,
        "html": str(documents.diff_versions(a.content, b.content, mode="inline")),
    }


@router.get(
    "/{int:session_id}/export",
    response={200: None, **ERRORS},
    summary="Export the document as Markdown, HTML or Word",
    openapi_extra={
        "responses": {
            200: {
                "description": "The file (Content-Disposition: attachment).",
                "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in EXPORTS.values()},
            }
        }
    },
)
def export_document(request: AuthenticatedHttpRequest, session_id: int, format: str = "md") -> HttpResponse:
    """The same files as the document page's export buttons. 409 while there is no document yet."""
    session = owned_session(request, session_id)
    if format not in EXPORTS:
        raise ApiError(422, "Unknown export format.", errors=[{"field": "format", "message": "One of md, html, docx."}])
    if not documents.current_document(session).strip():
        raise ApiError(409, "There is no document to export yet: the first turn writes it.", code="no_document")
    if format == "md":
        body: str | bytes = documents.export_markdown(session)
    elif format == "html":
        body = documents.export_html(session)
    else:
        body = documents.export_docx(session)
    response = HttpResponse(body, content_type=EXPORTS[format])
    response["Content-Disposition"] = f'attachment; filename="{documents.export_filename(session, format)}"'
    if format == "html":
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'"
    return response
