"""One JSON error shape for everything under /api/v1 (docs/api.md "Errors"):

    {"status": 422, "code": "validation_error", "message": "…", "errors": [{"field": "title", "message": "…"}]}

``errors`` is always present (empty when no field is at fault); plan refusals add ``upgrade_url``.
Ninja's own errors (request validation, authentication, throttling, HttpError), Django's Http404,
and anything unexpected (a 500, logged with its traceback, never shown) are converted here;
api.middleware converts what never reaches ninja (unknown URLs, wrong methods).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as NinjaValidationError

logger = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    402: "plan_limit",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "server_error",
}
MESSAGES = {
    401: "Authentication required: send “Authorization: Bearer <API key>”.",
    404: "Not found.",
    405: "Method not allowed.",
    500: "Something went wrong on our side. It has been logged; please try again.",
}


class ApiError(Exception):
    """An error response in the one shape. ``errors``: [{"field", "message"}]; ``extra`` adds keys
    (e.g. upgrade_url); ``headers`` are set on the response (e.g. Retry-After)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "",
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra


def error_body(
    status: int, message: str = "", *, code: str = "", errors: Iterable[dict[str, str]] | None = None, **extra: Any
) -> dict[str, Any]:
    """The error document for ``status`` (message and code default from the status)."""
    return {
        "status": status,
        "code": code or STATUS_CODES.get(status, "error"),
        "message": message or MESSAGES.get(status, "Request failed."),
        "errors": list(errors or []),
        **extra,
    }


def error_response(status: int, message: str = "", **kwargs: Any) -> JsonResponse:
    return JsonResponse(error_body(status, message, **kwargs), status=status)


def _field_name(loc: list[Any] | tuple[Any, ...]) -> str:
    """Pydantic's location without ninja's source prefix: ("body", "payload", "agents", 0, "name")
    -> "agents.0.name"; a query parameter keeps its name."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "form", "cookie"):
        parts = parts[1:]
        if len(parts) > 1 and parts[0] in ("payload", "data", "body"):
            parts = parts[1:]
    return ".".join(parts) or "body"


def install(api: NinjaAPI) -> None:
    """Register the handlers on ``api`` (replacing ninja's defaults)."""

    @api.exception_handler(ApiError)
    def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = error_response(exc.status, exc.message, code=exc.code, errors=exc.errors, **exc.extra)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    @api.exception_handler(NinjaValidationError)
    def _validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        errors = [
            {"field": _field_name(e.get("loc", ())), "message": str(e.get("msg", "Invalid."))} for e in exc.errors
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors):
            return error_response(400, "The request body is not valid JSON.", code="invalid_json", errors=errors)
        return error_response(422, "The request has invalid fields.", errors=errors)

    @api.exception_handler(AuthenticationError)
    def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = error_response(401)
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @api.exception_handler(Throttled)
    def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
        wait = math.ceil(exc.wait or 1)  # as ninja's Retry-After header
        message = f"Rate limit reached for this key. Retry after {wait} second{'s' if wait != 1 else ''}."
        return error_response(429, message, retry_after=wait)  # the operation adds the Retry-After header

    @api.exception_handler(HttpError)
    def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        message = str(exc.message) if hasattr(exc, "message") else str(exc)
        if exc.status_code == 403 and "CSRF" in message:
            message = "CSRF check failed: send the X-CSRFToken header with the session cookie, or use an API key."
            return error_response(403, message, code="csrf_failed")
        if exc.status_code == 400 and "parse request body" in message:
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        return error_response(exc.status_code, message)

    @api.exception_handler(Http404)
    def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(404)

    @api.exception_handler(Exception)
    def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("api: unhandled error on %s %s", request.method, request.path)
        return error_response(500)
