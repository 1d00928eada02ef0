"""Settings → API keys: create (the key is shown once), list, revoke. Writes go through api.services."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from api import services
from api.models import ApiKey
from atelier.core.http import AuthenticatedHttpRequest

PAGE = "api/keys.html"


def _context(request: AuthenticatedHttpRequest, **extra: Any) -> dict[str, Any]:
    keys = ApiKey.objects.filter(owner=request.user).order_by("revoked_at", "-created_at")
    return {"keys": keys, "max_keys": services.MAX_ACTIVE_KEYS, **extra}


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET lists the user's keys; POST creates one and shows the full key on this response only
    (never stored, never in a redirect's URL or a message that outlives the page)."""
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            key, raw = services.create_api_key(owner=request.user, name=name)
        except services.ApiKeyError as exc:
            return render(request, PAGE, _context(request, error=exc.message, name=name), status=400)
        response = render(request, PAGE, _context(request, new_key=raw, new_key_row=key))
        response["Cache-Control"] = "no-store"  # the page holds a secret: no browser or proxy copy
        return response
    return render(request, PAGE, _context(request))


@login_required
@require_POST
def api_key_revoke(request: AuthenticatedHttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=pk, owner=request.user)  # someone else's key: 404
    if services.revoke_api_key(key=key):
        messages.success(request, f"Revoked “{key.name}” ({key.prefix}…). Requests with it now get 401.")
    return redirect("api_keys")


urlpatterns = [
    path("", api_keys, name="api_keys"),
    path("<int:pk>/revoke/", api_key_revoke, name="api_key_revoke"),
]
