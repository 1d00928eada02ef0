"""Request context for logs: a request id (the proxy's X-Request-ID or a new one) and the user id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from atelier.core.logs import bound, request_id_for


class RequestContextMiddleware:
    """Binds request_id and user_id for every record logged while the request is handled, and returns the
    request id in the X-Request-ID response header so a user's report can be matched to the logs.
    Sync and async: async views (the event streams) keep running on the event loop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)  # as Django's MiddlewareMixin
        if self.async_mode:
            markcoroutinefunction(self)

    @staticmethod
    def _fields(request: HttpRequest) -> dict[str, object]:
        request_id = request_id_for(request.headers.get("X-Request-ID"))
        # An attribute of our own on the request (views read it with getattr): not in HttpRequest's type.
        request.request_id = request_id  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        return {"request_id": request_id, "user_id": user.pk if user is not None and user.is_authenticated else None}

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.async_mode:
            return self.__acall__(request)
        fields = self._fields(request)
        with bound(**fields):
            response: HttpResponse = self.get_response(request)
        response["X-Request-ID"] = str(fields["request_id"])
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        from asgiref.sync import sync_to_async

        fields = await sync_to_async(self._fields)(request)  # the user is loaded from the database
        with bound(**fields):
            response: HttpResponse = await self.get_response(request)
        response["X-Request-ID"] = str(fields["request_id"])
        return response
