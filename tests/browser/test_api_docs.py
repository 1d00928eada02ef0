"""The API's interactive docs and the keys page in real Chromium: Swagger UI renders every operation
within the site's Content-Security-Policy with no request leaving the server, and a key created on the
settings page is shown once and works.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_api_docs.py
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import make_user

pytestmark = pytest.mark.browser

PASSWORD = "violet-harbour-lantern-42"


def test_swagger_ui_renders_offline_under_the_csp(page, live_app, login, console_errors):
    make_user("docs@example.com", password=PASSWORD)
    outside: list[str] = []
    page.on("request", lambda request: request.url.startswith(live_app.url) or outside.append(request.url))
    login(page, live_app, "docs@example.com", PASSWORD)
    page.goto(live_app.url + "/api/v1/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator(".swagger-ui .opblock").count() >= 25
    expect(page.locator(".swagger-ui .title")).to_contain_text("Atelier API")
    assert not outside, outside  # nothing from a CDN (data: URIs are inline, not requests)
    assert not console_errors  # a CSP violation would be logged here


def test_a_key_created_on_the_page_is_shown_once_and_works(page, live_app, login):
    make_user("keys@example.com", password=PASSWORD)
    login(page, live_app, "keys@example.com", PASSWORD)
    page.goto(live_app.url + "/settings/api-keys/")
    page.fill("#id_key_name", "Laptop script")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key-value").inner_text().strip()
    assert secret.startswith("atl_")
    request = urllib.request.Request(live_app.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["email"] == "keys@example.com"
    page.goto(live_app.url + "/settings/api-keys/")
    expect(page.get_by_test_id("key-row")).to_contain_text("Laptop script")
    expect(page.get_by_test_id("new-key-value")).to_have_count(0)  # never shown again
    page.get_by_test_id("revoke-key").click()
    expect(page.get_by_test_id("key-row")).to_contain_text("Revoked")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("a revoked key still works")
    except urllib.error.HTTPError as error:
        assert error.code == 401
