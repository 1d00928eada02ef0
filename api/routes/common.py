"""Helpers every route uses: owner-scoped lookups (404 for anyone else's ids), form errors and
service refusals in the one error shape, pagination."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.forms import BaseForm

from api.errors import ApiError

M = TypeVar("M", bound=Model)
MAX_LIMIT = 100


def get_owned(queryset: QuerySet[M], *, pk: int, what: str = "object", **owner_filter: Any) -> M:
    """``queryset.get(pk=pk, **owner_filter)`` or a 404 in the API's shape (never a 403: an id
    does not reveal whether someone else's object exists)."""
    obj = queryset.filter(pk=pk, **owner_filter).first()
    if obj is None:
        raise ApiError(404, f"No such {what}.")
    return obj


def form_error(form: BaseForm, *, prefix: str = "") -> ApiError:
    """A 422 naming every field the (already validated) Django form rejected."""
    errors: list[dict[str, str]] = []
    for name, messages in form.errors.items():
        field = f"{prefix}{name}" if name != "__all__" else (prefix.rstrip(".") or "body")
        errors.extend({"field": field, "message": str(m)} for m in messages)
    return ApiError(422, "The request has invalid fields.", errors=errors)


def service_error(exc: Exception) -> ApiError:
    """A services.ServiceError as an API error: a plan limit (it carries an upgrade URL) is 402 with
    the reason and the URL; any other refusal (wrong state, caps) is 409."""
    message = getattr(exc, "message", str(exc))
    upgrade_url = getattr(exc, "upgrade_url", "")
    if upgrade_url:
        return ApiError(402, message, code="plan_limit", upgrade_url=upgrade_url)
    return ApiError(409, message, code="conflict")


def paginate(queryset: QuerySet[M], *, limit: int, offset: int) -> dict[str, Any]:
    """{"items", "count", "next_offset"} for ``limit`` (1..MAX_LIMIT) items from ``offset``."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            422, "Invalid pagination.", errors=[{"field": "limit", "message": f"Between 1 and {MAX_LIMIT}."}]
        )
    if offset < 0:
        raise ApiError(422, "Invalid pagination.", errors=[{"field": "offset", "message": "At least 0."}])
    count = queryset.count()
    items = list(queryset[offset : offset + limit])
    return {"items": items, "count": count, "next_offset": offset + limit if offset + limit < count else None}
