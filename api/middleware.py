"""Keep the one JSON error shape for /api/ responses that never reached a ninja operation: an unknown
URL (Django's 404 page), a method the path does not have (ninja's plain-text 405), a body over
DATA_UPLOAD_MAX_MEMORY_SIZE, or an exception raised outside ninja. Pages elsewhere are untouched.

Sync and async capable, so async views (the SSE streams) run without a thread hop per request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from api.errors import error_response

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _json_error(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if not request.path.startswith(API_PREFIX) or response.status_code < 400:
        return response
    if response.streaming or response.get("Content-Type", "").startswith("application/json"):
        return response
    replaced = error_response(response.status_code)
    for header in _KEPT_HEADERS:
        if header in response:
            replaced[header] = response[header]
    return replaced


class ApiJsonErrorsMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        # A sync or an async callable (Django passes either); each branch below says what it returns.
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        response: HttpResponse = self.get_response(request)
        return _json_error(request, response)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = await self.get_response(request)
        return _json_error(request, response)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        logger.exception("api: unhandled error on %s %s", request.method, request.path)
        return error_response(500)
