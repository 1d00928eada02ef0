import gc
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
# The web process borrows PostgreSQL connections from a pool (atelier/settings.py, DB_POOL), unless
# DB_POOL says otherwise; only while the settings load, so no process started from here inherits it.
_set_pool = "DB_POOL" not in os.environ
if _set_pool:
    os.environ["DB_POOL"] = "1"
django_asgi_app = get_asgi_application()
if _set_pool:
    del os.environ["DB_POOL"]

# Imported after Django is set up (consumers import models).
from channels.auth import AuthMiddleware, get_user  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import CookieMiddleware, SessionMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

# The provider SDKs take one to several seconds to import, and the builder needs them (which models
# take a temperature): the http_adapters import pays that while the server starts, not on a first page.
import orchestration.providers.http_adapters  # noqa: E402, F401
from orchestration.live import warm_up  # noqa: E402
from orchestration.routing import websocket_urlpatterns  # noqa: E402

# Likewise the live page's first render (the URLconf, the templates): not in front of a viewer's first text.
warm_up()
# What start-up loaded stays for the process's life: out of the garbage collector's full passes, which
# otherwise walk it all and hold every socket's pushes meanwhile (orchestration/apps.py, issue 15).
gc.freeze()

# The event loop gets the GIL back sooner after each socket call (default 5 ms; issue 15). Every message a
# socket is pushed costs this process four Redis round trips in channels-redis's receive, one after another
# for the whole process, each giving up the GIL; while the database threads render cards and catch-ups, each
# waited up to the switch interval to resume: a py-spy of a web process under 200 sessions found its event
# loop a quarter of the time in socket writes waiting for the GIL, and the pushes queued behind it.
# Measured in docs/benchmarks.md, "The live page under load, second pass".
WEB_SWITCH_INTERVAL_SECONDS = 0.0005
sys.setswitchinterval(WEB_SWITCH_INTERVAL_SECONDS)

_TOO_LARGE = b"Request body too large."

# The ASGI callables as Django's own handler types them (django-stubs).
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: refuse HTTP request bodies over ``max_bytes`` with 413 before Django parses them.

    A declared Content-Length over the cap is refused at once, without reading the body. A body
    without one (chunked transfer encoding) is counted while it streams in; at the cap the
    application is told the client went away (``http.disconnect``: Django stops reading and sends
    nothing) and the 413 is sent from here. Multipart parsing costs many times the body size in
    memory, so this is the only bound that holds for anonymous requests (CSRF is checked later).
    Sized in settings.MAX_REQUEST_BODY_BYTES; the proxy in front should enforce the same cap.
    """

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.strip().isdigit() or int(value) > self.max_bytes):
                return await self._refuse(send)
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the 413 is the response; nothing from the application may follow it
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(_TOO_LARGE)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _TOO_LARGE})


class SocketAuthMiddleware(AuthMiddleware):  # type: ignore[misc]  # channels is untyped
    """channels' AuthMiddleware, reading the session and user on the default executor instead of the one
    thread every thread-sensitive call of the process shares (issue 15): at a burst of connects (bench/load.py
    opens 100 sockets per web process at once) those reads queued there one behind another, past daphne's
    5 s WebSocket connect timeout, and daphne closed sockets without an answer. The read touches only this
    scope's session and one user row, so any thread will do."""

    async def resolve_scope(self, scope: Scope) -> None:
        scope["user"]._wrapped = await database_sync_to_async(get_user.func, thread_sensitive=False)(scope)


def socket_auth_stack(inner: App) -> App:
    """AuthMiddlewareStack with SocketAuthMiddleware: the cookie, the session, then the user."""
    return cast(App, CookieMiddleware(SessionMiddleware(SocketAuthMiddleware(inner))))


application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app, settings.MAX_REQUEST_BODY_BYTES),
        "websocket": AllowedHostsOriginValidator(socket_auth_stack(URLRouter(websocket_urlpatterns))),
    }
)
