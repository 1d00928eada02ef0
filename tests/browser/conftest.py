"""Playwright fixtures shared by every browser test.

Real Chromium (Debian's /usr/bin/chromium, never `playwright install`) against the real app
processes from the `live_app` fixture. Run browser tests in their own pytest call:

    DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser

Every page fails its test if it logs a console error or violates the CSP, unless the test is
marked `@pytest.mark.allow_console_errors`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Sync Playwright keeps an event loop running in the main thread; Django's ORM would refuse to run.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}

# Reported through console.error so a CSP violation fails the test like any other page error.
_CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_console_errors: the page may log console errors in this test")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def mailbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Emails sent by the live web and worker processes land as files here (autouse: set before they start)."""
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    monkeypatch.setenv("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
    monkeypatch.setenv("EMAIL_FILE_PATH", str(mail_dir))
    return mail_dir


@pytest.fixture
def read_mail(mailbox: Path) -> Callable[[], str]:
    """All mail sent so far, as one text blob (one file per SMTP 'connection')."""

    def read() -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(mailbox.glob("*.log")))

    return read


class ConsoleLog(list):
    """Console errors seen while the test body runs. Closed before fixtures tear down, so a page
    noticing that the live server went away during teardown does not count."""

    closed = False

    def add(self, text: str) -> None:
        if not self.closed:
            self.append(text)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    yield
    log = getattr(item, "funcargs", {}).get("console_errors")
    if isinstance(log, ConsoleLog):
        log.closed = True


@pytest.fixture
def console_errors() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def open_page(browser, request: pytest.FixtureRequest, console_errors: ConsoleLog) -> Iterator[Callable[[], object]]:
    """open_page() -> a new page in its own browser context (its own cookies), as a second person
    on a second machine would have. Console errors on any of them fail the test."""
    contexts = []

    def open_one():
        context = browser.new_context(viewport=VIEWPORT)
        context.add_init_script(_CSP_LISTENER)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and console_errors.add(message.text))
        page.on("pageerror", lambda error: console_errors.add(f"uncaught: {error}"))
        return page

    yield open_one
    for context in contexts:
        context.close()
    if console_errors and request.node.get_closest_marker("allow_console_errors") is None:
        pytest.fail("the page logged console errors:\n" + "\n".join(console_errors), pytrace=False)


@pytest.fixture
def page(open_page) -> object:
    return open_page()


@pytest.fixture
def login() -> Callable[..., None]:
    """login(page, live_app, email, password): log in through the real form and wait to leave it."""

    def do_login(page, live_app, email: str, password: str) -> None:
        page.goto(live_app.url + "/accounts/login/")
        page.fill("input[name=login]", email)
        page.fill("input[name=password]", password)
        page.locator("[data-testid=login-form] button[type=submit]").click()
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        page.wait_for_load_state()

    return do_login


def wait_for_mail(read_mail: Callable[[], str], pattern: str, *, timeout: float = 20) -> re.Match:
    """Wait until a sent email matches `pattern` (a regex) and return the match."""
    from tests.live import wait_for

    return wait_for(lambda: re.search(pattern, read_mail()), timeout=timeout, message=f"an email matching {pattern}")


def element_screenshot(locator, path: str, *, attempts: int = 5) -> None:
    """Screenshot one element of a live page into `path` (PNG).

    The live page replaces a panel with a fresh copy whenever a push re-renders it (the report after
    the run's last status change, for one), so the element a locator found can leave the DOM while
    Playwright waits for it to be stable. The fresh copy shows the same thing: take it instead.
    Raises the last Playwright error if the element never holds still.
    """
    from playwright.sync_api import Error

    for attempt in range(attempts):
        try:
            locator.screenshot(path=path, timeout=10_000, animations="disabled")
            return
        except Error:  # "Element is not attached to the DOM" or a timeout while it moved
            if attempt == attempts - 1:
                raise
            locator.page.wait_for_timeout(250)
