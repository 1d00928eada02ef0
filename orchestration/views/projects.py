"""Dashboard and project pages."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "orchestration/dashboard.html")


urls = [
    path("dashboard/", dashboard, name="dashboard"),
]
