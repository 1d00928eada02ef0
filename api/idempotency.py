"""``Idempotency-Key`` for POSTs that create or start something (docs/api.md "Idempotent retries").

The first request with a key runs and, when it succeeds (2xx), its status and JSON body are stored
with the owner, the key and a SHA-256 of the method, path and body. A retry with the same key:
- same request, first one finished: the stored response again (header ``Idempotent-Replayed: true``),
  nothing is created or started twice;
- same request, first one still running: 409 ``idempotency_in_progress`` with Retry-After: 1;
- a different request (other body or path): 422 ``idempotency_key_reused``. The key names one
  operation; reusing it for another is a client bug we surface instead of guessing.
A request that failed (4xx/5xx) stores nothing, so fixing the body and retrying with the same key
works. Keys are kept for KEEP (24 h, as Stripe does); an in-progress record older than STALE (a
crashed worker) is taken over by the next retry.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Schema, Status

from api.errors import ApiError
from api.models import IdempotencyRecord
from atelier.core.http import AuthenticatedHttpRequest

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEEP = timedelta(hours=24)
STALE = timedelta(minutes=5)

P = ParamSpec("P")
# A ninja operation: the request first, then its parameters; returns Status(code, obj) or obj.
Operation = Callable[Concatenate[AuthenticatedHttpRequest, P], object]


def request_hash(request: HttpRequest) -> str:
    digest = hashlib.sha256()
    for part in (request.method or "", request.path, ""):
        digest.update(part.encode() + b"\0")
    digest.update(request.body)
    return digest.hexdigest()


def _claim(request: AuthenticatedHttpRequest, key: str) -> IdempotencyRecord | HttpResponse:
    """Our new in-progress record, or the response a retry gets."""
    owner = request.user
    fingerprint = request_hash(request)
    now = timezone.now()
    IdempotencyRecord.objects.filter(owner=owner, created_at__lt=now - KEEP).delete()
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(owner=owner, key=key, request_hash=fingerprint)
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.filter(owner=owner, key=key).first()
    if record is None:  # deleted meanwhile (the first request failed): run this one
        return _claim(request, key)
    if record.request_hash != fingerprint:
        raise ApiError(
            422,
            f"This Idempotency-Key was already used for a different request. Use a new key for a new {request.method}.",
            code="idempotency_key_reused",
        )
    if record.status_code is None:
        if record.created_at > now - STALE:
            raise ApiError(
                409,
                "A request with this Idempotency-Key is still being processed. Retry shortly.",
                code="idempotency_in_progress",
                headers={"Retry-After": "1"},
            )
        record.created_at = now
        record.save(update_fields=["created_at"])
        return record
    response = JsonResponse(record.response_body, status=record.status_code, safe=False)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(
    schema: type[Schema],
) -> Callable[[Operation[P]], Callable[Concatenate[AuthenticatedHttpRequest, P], HttpResponse]]:
    """Decorate a ninja POST operation returning ``Status(code, obj)`` or ``obj``; ``schema`` serializes ``obj``
    (the same one as its ``response=``). Without the header the operation runs as usual."""

    def decorator(view: Operation[P]) -> Callable[Concatenate[AuthenticatedHttpRequest, P], HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: AuthenticatedHttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            key = request.headers.get(HEADER, "").strip()
            if not key:
                return _respond(view(request, *args, **kwargs), schema)
            if len(key) > MAX_KEY_LENGTH:
                raise ApiError(
                    422,
                    "Invalid Idempotency-Key.",
                    errors=[{"field": HEADER, "message": f"At most {MAX_KEY_LENGTH} characters."}],
                )
            claimed = _claim(request, key)
            if isinstance(claimed, HttpResponse):
                return claimed
            try:
                response = _respond(view(request, *args, **kwargs), schema)
            except BaseException:
                claimed.delete()
                raise
            IdempotencyRecord.objects.filter(pk=claimed.pk).update(
                status_code=response.status_code, response_body=response.data
            )
            return response

        return wrapper

    return decorator


class _Response(JsonResponse):
    data: Any


def _respond(result: object, schema: type[Schema]) -> _Response:
    status, obj = (result.status_code, result.value) if isinstance(result, Status) else (200, result)
    data = schema.from_orm(obj).model_dump(mode="json") if obj is not None else None
    response = _Response(data, status=status, safe=False)
    response.data = data
    return response
