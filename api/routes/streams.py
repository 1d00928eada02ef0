"""Server-Sent Events: a session's (and a conversation's) event log, live (docs/api.md "Streaming").

Async operations (daphne serves each open stream without a thread); the stream itself is
orchestration.streams.follow. This module adds the HTTP side: authentication (the API's usual
auth, run by ninja), the per-minute rate limit, ownership (404 for anyone else's id), the resume
position (400 when it is not an event id of this run) and the per-key concurrent-stream limit
(429 + Retry-After beyond the plan's ``api_concurrent_streams``, billing/plans.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from ninja import Router

from api.auth import take_request
from api.errors import ApiError
from api.schemas import ERRORS
from orchestration import streams

if TYPE_CHECKING:
    from django.contrib.auth.models import User

router = Router(tags=["streams"])

SLOT_RETRY_AFTER_SECONDS = 5  # a slot frees when a stream closes; a client retrying sooner wastes a request

_SSE_DOC = {
    "responses": {
        200: {
            "description": (
                "text/event-stream: `id:` = event sequence number, `event:` = kind, `data:` = the event as JSON "
                '({"seq", "kind", "turn_id", "payload", "agent"}); `: ping` comments while idle; a final '
                '`end` event ({"status", "stop_reason", "stop_detail", "round", "last_seq"}), then the '
                "stream closes. Resume with the `Last-Event-ID` header or `?after=`."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
    "parameters": [
        {
            "in": "header",
            "name": "Last-Event-ID",
            "required": False,
            "schema": {"type": "string"},
            "description": "Resume after this event id (wins over `after`).",
        }
    ],
}


def _rate_limit(request: HttpRequest) -> None:
    """The API's per-minute limit (api.auth.take_request); opening a stream is one request."""
    wait = take_request(request)
    if wait is not None:
        seconds = int(wait)
        raise ApiError(
            429,
            f"Rate limit reached for this key. Retry after {seconds} seconds.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )


def _stream_limit(user: User) -> int:
    from billing.services import effective_plan, get_account

    return effective_plan(get_account(user)).api_concurrent_streams


def _session_run(user: User, session_id: int) -> tuple[streams.EventSource, int]:
    """The caller's session's event log and last sequence number; 404 for anyone else's, a missing id
    or a conversation's hidden run (streamed as the conversation)."""
    from orchestration.models import Flow, WritingSession

    last_seq = (
        WritingSession.objects.filter(pk=session_id, project__owner=user)
        .exclude(flow=Flow.CONVERSATION)
        .values_list("last_seq", flat=True)
        .first()
    )
    if last_seq is None:
        raise ApiError(404, "No such session.")
    return streams.SessionEvents(session_id), last_seq


def _conversation_run(user: User, conversation_id: int) -> tuple[streams.EventSource, int]:
    """The caller's conversation's event log (the log of the run behind it) and last sequence number;
    404 for anyone else's or a missing id."""
    from orchestration.conversations.models import Conversation

    row = (
        Conversation.objects.filter(pk=conversation_id, project__owner=user)
        .values_list("session_id", "session__last_seq")
        .first()
    )
    if row is None:
        raise ApiError(404, "No such conversation.")
    return streams.SessionEvents(row[0]), row[1]


def _bad_position(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_position", errors=[{"field": "after", "message": message}])


# Given the authenticated user: the run's event source and its last sequence number (ApiError(404) if not theirs).
Resolver = Callable[["User"], tuple[streams.EventSource, int]]


def _prepare(request: HttpRequest, after: str | None, resolve: Resolver) -> tuple[streams.EventSource, int, int]:
    """Synchronous checks before a stream opens: rate limit, ownership, position. Returns
    (the run's event source, position, the stream limit of the caller's plan); raises ApiError."""
    _rate_limit(request)
    user = request.user
    assert user.is_authenticated  # ninja authenticated the request first
    source, last_seq = resolve(user)
    try:
        position = streams.parse_position(request.headers.get("Last-Event-ID"), after)
    except streams.InvalidPosition as exc:
        raise _bad_position(str(exc)) from None
    if position > last_seq:
        raise _bad_position(f"There is no event {position}: the latest is {last_seq}. Resume from an id it sent.")
    return source, position, _stream_limit(user)


async def open_stream(request: HttpRequest, *, after: str | None, resolve: Resolver) -> HttpResponseBase:
    """Check, take a stream slot and return the streaming response.

    `resolve(user) -> (EventSource, last_seq)` raises ApiError(404) unless the caller owns the run.
    """
    # call_and_close: no connection is left behind in this request's thread, refused or not.
    source, position, limit = await sync_to_async(streams.call_and_close)(_prepare, request, after, resolve)
    key = getattr(request, "api_key", None)
    heartbeat = settings.API_SSE_HEARTBEAT_SECONDS
    slot = streams.StreamSlot(
        holder=f"key:{key.pk}" if key is not None else f"user:{request.user.pk}",
        limit=limit,
        ttl_seconds=3 * heartbeat,
        retry_after=SLOT_RETRY_AFTER_SECONDS,
    )
    try:
        await slot.__aenter__()
    except streams.StreamLimitReached as exc:
        raise ApiError(
            429,
            f"This key already has {exc.limit} event streams open, the most your plan allows. "
            "Close one (streams also close when their run ends) and retry.",
            code="too_many_streams",
            headers={"Retry-After": str(exc.retry_after)},
            retry_after=exc.retry_after,
            limit=exc.limit,
        ) from None

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            async for part in streams.follow(
                source,
                after=position,
                heartbeat_seconds=heartbeat,
                poll_seconds=settings.API_SSE_POLL_SECONDS,
                on_heartbeat=slot.refresh,
            ):
                yield part
        finally:
            await slot.__aexit__(None, None, None)

    return streams.EventStreamResponse(body())


@router.get(
    "/sessions/{int:session_id}/events",
    response={200: None, **ERRORS},
    throttle=[],  # rate-limited in _prepare: ninja's throttle hook is synchronous and reads the database
    summary="Stream a session's events (Server-Sent Events, resumable)",
    openapi_extra=_SSE_DOC,
)
async def session_events(request: HttpRequest, session_id: int, after: str | None = None) -> HttpResponseBase:
    """Everything after `after` (or the Last-Event-ID header), then the live tail, then `end`."""
    return await open_stream(request, after=after, resolve=lambda user: _session_run(user, session_id))


@router.get(
    "/conversations/{int:conversation_id}/events",
    response={200: None, **ERRORS},
    throttle=[],
    summary="Stream a conversation's events (Server-Sent Events, resumable)",
    openapi_extra=_SSE_DOC,
)
async def conversation_events(request: HttpRequest, conversation_id: int, after: str | None = None) -> HttpResponseBase:
    """The conversation's log: the reply to its latest message streaming (chunks labelled with the
    answering agent, `message` events for each transcript entry: handoffs, tool calls, replies), then
    `end` when that reply is done. A conversation with no reply running replays and ends at once."""
    return await open_stream(request, after=after, resolve=lambda user: _conversation_run(user, conversation_id))
