"""Response and request shapes shared by the routes (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema


class FieldError(Schema):
    field: str
    message: str


class Error(Schema):
    """Every error response (api.errors)."""

    status: int
    code: str
    message: str
    errors: list[FieldError]
    upgrade_url: str | None = None
    retry_after: int | None = None


class Page(Schema):
    count: int
    next_offset: int | None


class ProjectOut(Schema):
    id: int
    name: str
    description: str
    archived: bool
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_archived(obj) -> bool:
        return obj.archived_at is not None


class ProjectPage(Page):
    items: list[ProjectOut]


class ProjectIn(Schema):
    name: str
    description: str = ""


class ProjectPatch(Schema):
    name: str | None = None
    description: str | None = None
    archived: bool | None = None


ERRORS = {400: Error, 401: Error, 402: Error, 403: Error, 404: Error, 409: Error, 422: Error, 429: Error}
