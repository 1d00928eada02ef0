"""Typed requests for views, so mypy knows what middleware and decorators guarantee.

Django's ``HttpRequest`` says nothing about ``request.htmx`` (added by django-htmx's middleware) and
types ``request.user`` as ``User | AnonymousUser``. Annotating a view with one of these classes states
the guarantee once, as django-htmx's example project and django-stubs' documentation do; nothing is
checked at run time (the classes are never instantiated).

- ``HtmxHttpRequest``: any request that went through ``django_htmx.middleware.HtmxMiddleware``.
- ``AuthenticatedHttpRequest``: the request of a ``login_required`` view (or one behind a check that
  refused anonymous users): ``request.user`` is the User model.

``htmx_redirect`` is the one "HX-Redirect for htmx, 302 otherwise" answer.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    # Set by orchestration.views.documents for the read-only (staff) view of a session's documents.
    atelier_read_only: bool


class AuthenticatedHttpRequest(HtmxHttpRequest):
    user: User


def htmx_redirect(request: HtmxHttpRequest, url: str) -> HttpResponse:
    """Send the browser to ``url``: an htmx request gets ``HX-Redirect`` (htmx loads the page; a plain 302
    would be followed by the XHR and swapped into the page), any other request a 302."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)
