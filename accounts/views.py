from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.forms import PreferencesForm
from accounts.services import get_profile, remember_time_zone
from atelier.core.http import AuthenticatedHttpRequest


@login_required
@require_http_methods(["GET", "POST"])
def preferences(request: AuthenticatedHttpRequest) -> HttpResponse:
    profile = get_profile(request.user)
    if request.method == "POST":
        form = PreferencesForm(request.POST, instance=profile)
        if form.is_valid():
            profile = form.save()
            remember_time_zone(request, user_id=request.user.pk, time_zone=profile.time_zone)
            messages.success(request, "Your preferences were saved.")
            return redirect("preferences")
    else:
        form = PreferencesForm(instance=profile)
    return render(request, "accounts/preferences.html", {"form": form, "profile": profile})
