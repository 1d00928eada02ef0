"""Who is calling /api/v1, and how often they may.

Two ways in, tried in this order on every operation (``AUTH``):
- ``ApiKeyAuth``: ``Authorization: Bearer atl_…``. A bad, unknown or revoked key is a 401 at once
  (it never falls through to the cookie), with the reason.
- ``SessionCookieAuth``: the browser's session cookie, for pages calling the API. CSRF is checked
  (``X-CSRFToken`` header, as Django forms do) whenever the cookie is what authenticates; a request
  with no logged-in session skips the check and ends as a 401, not a confusing 403.

Either sets ``request.user`` to the owner and ``request.api_key`` to the key (None for a cookie).

For views outside ninja (the SSE streams are plain async Django views): call
``authenticate_request(request)`` (sync) or ``await aauthenticate_request(request)``; they return the
user, set the same attributes, check CSRF for unsafe methods on cookie auth, and raise ``ApiError``
(401/403/429) that ``api.errors.error_response`` can render.

Rate limits (``PlanRateThrottle``): a fixed one-minute window per key (per user for the cookie) in the
shared cache (Redis in every set-up, so every web process counts the same window): one INCR per
request, no database write. The limit is the caller's plan's ``api_requests_per_minute``
(billing/plans.py). Over it: 429 with Retry-After = seconds to the window's end. A fixed window may
let through up to twice the limit across a window edge; that is acceptable for abuse protection and
costs one cache round trip, where a sliding log would cost a list per key.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja.security import APIKeyCookie, HttpBearer
from ninja.throttling import BaseThrottle
from ninja.utils import check_csrf

from api.errors import ApiError
from api.services import ApiKeyError, authenticate_key

if TYPE_CHECKING:
    from django.contrib.auth.models import User

WINDOW_SECONDS = 60


class ApiKeyAuth(HttpBearer):
    """``Authorization: Bearer <API key>``."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        try:
            key = authenticate_key(token)
        except ApiKeyError as exc:
            raise ApiError(401, exc.message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}) from None
        request.user = key.owner
        # request.api_key: our own attribute (read with getattr), not in HttpRequest's type.
        request.api_key = key  # type: ignore[attr-defined]
        return key.owner


class SessionCookieAuth(APIKeyCookie):
    """The logged-in browser session, with Django's CSRF check for unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None  # no session: nothing to protect with CSRF; ends as 401
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if key is None or not request.user.is_authenticated:
            return None
        # request.api_key: our own attribute (read with getattr), not in HttpRequest's type.
        request.api_key = None  # type: ignore[attr-defined]
        return request.user


AUTH = [ApiKeyAuth(), SessionCookieAuth()]


def _bucket(request: HttpRequest) -> str:
    key = getattr(request, "api_key", None)
    return f"api-rate:key:{key.pk}" if key is not None else f"api-rate:user:{request.user.pk}"


def requests_per_minute(user: User) -> int:
    """The caller's plan's API request limit per minute (billing/plans.py)."""
    from billing.services import effective_plan, get_account

    return effective_plan(get_account(user)).api_requests_per_minute


def take_request(request: HttpRequest) -> float | None:
    """Count this request in the caller's window; None when allowed, else seconds until the window ends."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    name = f"{_bucket(request)}:{window}"
    cache.add(name, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(name)
    except ValueError:  # evicted between add and incr: start the window again
        cache.set(name, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    user = request.user
    assert user.is_authenticated  # counted only once authentication succeeded
    if count <= requests_per_minute(user):
        return None
    return max(1.0, (window + 1) * WINDOW_SECONDS - now)


class PlanRateThrottle(BaseThrottle):
    """Ninja throttle over take_request: ninja turns a refusal into 429 with Retry-After."""

    def allow_request(self, request: HttpRequest) -> bool:
        self._wait = take_request(request)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


def authenticate_request(request: HttpRequest, *, rate_limit: bool = True) -> Any:
    """Authenticate a request that does not go through a ninja operation (the SSE views): the same
    rules as AUTH and the same rate limit. Returns the user; raises ApiError (401 / 403 / 429)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = ApiKeyAuth().authenticate(request, header[7:].strip())
    elif request.user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE") and check_csrf(request):
            raise ApiError(403, "CSRF check failed: send the X-CSRFToken header.", code="csrf_failed")
        # request.api_key: our own attribute (read with getattr), not in HttpRequest's type.
        request.api_key = None  # type: ignore[attr-defined]
        user = request.user
    else:
        raise ApiError(401, "", code="unauthenticated", headers={"WWW-Authenticate": 'Bearer realm="api"'})
    if rate_limit and (wait := take_request(request)) is not None:
        seconds = math.ceil(wait)
        raise ApiError(
            429,
            f"Rate limit reached for this key. Retry after {seconds} seconds.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )
    return user


async def aauthenticate_request(request: HttpRequest, *, rate_limit: bool = True) -> Any:
    """authenticate_request for async views (runs it in a thread: it reads the database)."""
    return await sync_to_async(authenticate_request)(request, rate_limit=rate_limit)
