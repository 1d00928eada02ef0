"""Projects: list, create, read, update (rename, describe, archive), delete."""

from typing import Any

from ninja import Router, Status

from api.idempotency import idempotent
from api.routes.common import form_error, get_owned, paginate, service_error
from api.schemas import ERRORS, ProjectIn, ProjectOut, ProjectPage, ProjectPatch
from atelier.core.http import AuthenticatedHttpRequest
from orchestration import services
from orchestration.forms import ProjectForm
from orchestration.models import Project

router = Router(tags=["projects"])


def owned_project(request: AuthenticatedHttpRequest, pk: int) -> Project:
    """The caller's project ``pk``, or a 404."""
    return get_owned(Project.objects.all(), pk=pk, what="project", owner_id=request.user.pk)


@router.get("", response={200: ProjectPage, **ERRORS}, summary="List your projects, newest activity first")
def list_projects(
    request: AuthenticatedHttpRequest, archived: bool = False, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    projects = Project.objects.filter(owner=request.user, archived_at__isnull=not archived).order_by("-updated_at")
    return paginate(projects, limit=limit, offset=offset)


@router.post("", response={201: ProjectOut, **ERRORS}, summary="Create a project (Idempotency-Key supported)")
@idempotent(ProjectOut)
def create_project(request: AuthenticatedHttpRequest, payload: ProjectIn) -> Status[Project]:
    form = ProjectForm(data=payload.dict())
    if not form.is_valid():
        raise form_error(form)
    try:
        project = services.create_project(owner=request.user, **form.cleaned_data)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return Status(201, project)


@router.get("/{int:project_id}", response={200: ProjectOut, **ERRORS}, summary="Read a project")
def get_project(request: AuthenticatedHttpRequest, project_id: int) -> Project:
    return owned_project(request, project_id)


@router.patch("/{int:project_id}", response={200: ProjectOut, **ERRORS}, summary="Rename, describe or archive")
def update_project(request: AuthenticatedHttpRequest, project_id: int, payload: ProjectPatch) -> Project:
    project = owned_project(request, project_id)
    changes = payload.dict(exclude_unset=True)
    archived = changes.pop("archived", None)
    if changes:
        form = ProjectForm(data={"name": project.name, "description": project.description, **changes})
        if not form.is_valid():
            raise form_error(form)
        services.update_project(project=project, **{k: form.cleaned_data[k] for k in changes})
    if archived is not None:
        services.set_project_archived(project=project, archived=archived)
    return project


@router.delete("/{int:project_id}", response={204: None, **ERRORS}, summary="Delete a project and its sessions")
def delete_project(request: AuthenticatedHttpRequest, project_id: int) -> Status[None]:
    project = owned_project(request, project_id)
    try:
        services.delete_project(project=project)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return Status(204, None)
