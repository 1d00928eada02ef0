"""Typed requests for views, so mypy knows what middleware and decorators guarantee.

Django's ``HttpRequest`` says nothing about ``request.htmx`` (added by django-htmx's middleware) and
types ``request.user`` as ``User | AnonymousUser``. Annotating a view with one of these classes states
the guarantee once, as django-htmx's example project and django-stubs' documentation do; nothing is
checked at run time (the classes are never instantiated).

- ``HtmxHttpRequest``: any request that went through ``django_htmx.middleware.HtmxMiddleware``.
- ``AuthenticatedHttpRequest``: the request of a ``login_required`` view (or one behind a check that
  refused anonymous users): ``request.user`` is the User model.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    # Set by orchestration.views.documents for the read-only (staff) view of a session's documents.
    atelier_read_only: bool


class AuthenticatedHttpRequest(HtmxHttpRequest):
    user: User
