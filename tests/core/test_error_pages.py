"""Error pages are styled and the 500 page needs no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, RequestFactory

BASE_DIR = Path(settings.BASE_DIR)


# --- error pages -------------------------------------------------------------------------------------


def test_unknown_url_shows_the_styled_404_page(client, db, settings):
    settings.DEBUG = False
    response = client.get("/there-is-nothing-here/")
    html = response.content.decode()
    assert response.status_code == 404
    assert 'class="topbar"' in html
    assert "We couldn&#x27;t find that page" in html or "We couldn't find that page" in html
    assert "css/app.css" in html


def test_csrf_failure_shows_the_styled_403_page(db):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"login": "a@example.com", "password": "x"})
    html = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in html
    assert "This form expired" in html


@pytest.mark.parametrize(
    ("handler", "status", "text"),
    [("error_400", 400, "understand that request"), ("error_403", 403, "have access to this")],
)
def test_400_and_403_pages_are_styled(db, handler, status, text):
    from django.contrib.auth.models import AnonymousUser

    from atelier.core import views

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    response = getattr(views, handler)(request, Exception("x"))
    html = response.content.decode()
    assert response.status_code == status
    assert text in html.replace("&#x27;", "'")
    assert 'class="topbar"' in html


def test_500_page_renders_without_the_database():
    from atelier.core.views import error_500

    # No `db` fixture: pytest-django makes any query raise here, which is the point.
    response = error_500(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in html
    assert "css/app.css" in html
