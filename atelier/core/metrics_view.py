"""GET /metrics: the Prometheus text format, for staff or for a scraper holding METRICS_TOKEN."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from atelier.core import metrics


def _authorized(request: HttpRequest) -> bool:
    """Staff signed in, or `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        response = HttpResponse("Metrics need a staff sign-in or the metrics token.\n", status=403)
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
