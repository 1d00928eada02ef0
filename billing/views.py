from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def billing_page(request: HttpRequest) -> HttpResponse:
    return render(request, "billing/billing.html")


def pricing_page(request: HttpRequest) -> HttpResponse:
    return render(request, "billing/billing.html")
