"""Accounts in real Chromium against the real ASGI server: sign up, confirm, preferences, log out, errors.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_accounts.py
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import wait_for_mail
from tests.conftest import make_user

pytestmark = pytest.mark.browser

EMAIL = "writer@example.com"
PASSWORD = "violet-harbour-lantern-42"


def test_sign_up_confirm_edit_preferences_and_log_out(page, live_app, read_mail, login):
    from accounts.models import Profile

    base = live_app.url
    page.goto(base + "/")
    page.get_by_role("link", name="Start free").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))

    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.locator("[data-testid=signup-form] button[type=submit]").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    # The link from the email the web process sent.
    link = wait_for_mail(read_mail, r"http://[^\s]+/accounts/confirm-email/[^\s]+/").group(0)
    assert link.startswith(base)
    page.goto(link)
    expect(page.get_by_text(EMAIL)).to_be_visible()
    page.get_by_role("button", name="Confirm my email").click()
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    expect(page.get_by_test_id("logout")).to_be_visible()

    # Preferences: display name and time zone, saved and shown again.
    page.get_by_role("link", name="Preferences").first.click()
    expect(page.get_by_role("heading", name="Profile & preferences")).to_be_visible()
    page.fill("input[name=display_name]", "Ada Lovelace")
    page.select_option("select[name=time_zone]", "Europe/Paris")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_text("Your preferences were saved.")).to_be_visible()
    expect(page.locator("input[name=display_name]")).to_have_value("Ada Lovelace")
    expect(page.locator("select[name=time_zone]")).to_have_value("Europe/Paris")
    profile = Profile.objects.get(user__email=EMAIL)
    assert (profile.display_name, profile.time_zone) == ("Ada Lovelace", "Europe/Paris")

    # Log out from the navigation, then back in with the same password.
    page.get_by_test_id("logout").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    page.goto(base + "/accounts/preferences/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    login(page, live_app, EMAIL, PASSWORD)
    expect(page).to_have_url(re.compile(r"/dashboard/$"))


def test_signup_shows_clear_errors_for_a_bad_email_and_a_weak_password(page, live_app):
    page.goto(live_app.url + "/accounts/signup/")
    page.fill("input[name=email]", "not-an-email")
    page.fill("input[name=password1]", "short")
    page.fill("input[name=password2]", "short")
    page.locator("[data-testid=signup-form] button[type=submit]").click()

    email_field = page.locator("[data-field=email]")
    expect(email_field.locator(".errorlist")).to_contain_text("Enter a valid email address.")
    expect(page.locator("input[name=email]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("input[name=email]")).to_be_focused()

    page.fill("input[name=email]", "fine@example.com")
    page.fill("input[name=password1]", "12345678901234")
    page.fill("input[name=password2]", "12345678901234")
    page.locator("[data-testid=signup-form] button[type=submit]").click()
    expect(page.locator("[data-field=password1] .errorlist")).to_contain_text("entirely numeric")
    expect(page.locator("input[name=password1]")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))


def test_wrong_password_shows_a_clear_error(page, live_app, login):
    make_user("someone@example.com", password=PASSWORD)
    page.goto(live_app.url + "/accounts/login/")
    page.fill("input[name=login]", "someone@example.com")
    page.fill("input[name=password]", "not-the-password")
    page.locator("[data-testid=login-form] button[type=submit]").click()

    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not correct")
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_test_id("logout")).to_have_count(0)


def test_phone_width_navigation_toggle_and_no_sideways_scroll(browser, live_app, console_errors):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and console_errors.add(message.text))
    try:
        for path in ("/", "/accounts/login/", "/accounts/signup/"):
            page.goto(live_app.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path

        page.goto(live_app.url + "/")
        login_link = page.locator(".nav-links").get_by_role("link", name="Log in")
        expect(login_link).to_be_hidden()
        page.locator(".nav-toggle-label").tap()
        expect(login_link).to_be_visible()
        expect(page.locator("#nav-toggle")).to_have_attribute("aria-expanded", "true")
        page.locator(".nav-toggle-label").tap()
        expect(login_link).to_be_hidden()

        page.locator(".nav-toggle-label").tap()
        login_link.tap()
        expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    finally:
        context.close()
    assert console_errors == []
