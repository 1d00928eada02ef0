"""Shared fixtures: personas, the model catalogue, live app processes."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.fakes.llm_server import fake_llm  # noqa: F401 (fixture)
from tests.fakes.stripe_server import fake_stripe  # noqa: F401 (fixture)


class RunFinishedEmails(list[int]):
    """Session ids whose run-finished email the engine handed to the mail thread, recorded instead of sent (as
    Django's test runner keeps sent mail in mail.outbox); `send_later` is the real hand-off."""

    def __init__(self, send_later):
        super().__init__()
        self.send_later = send_later


@pytest.fixture(autouse=True)
def run_finished_emails(monkeypatch) -> RunFinishedEmails:
    """Every test: run-finished emails are recorded here, not sent from a thread the test does not wait for."""
    from orchestration import notifications

    handed = RunFinishedEmails(notifications.send_run_finished_email_later)
    monkeypatch.setattr(notifications, "send_run_finished_email_later", handed.append)
    return handed


@pytest.fixture(autouse=True)
def _clear_cache():
    # allauth rate limits live in the cache; one test's failed logins must not lock out the next.
    cache.clear()
    yield


def make_user(email: str, password: str = "correct horse battery staple", **extra):
    """A user with a verified email, ready to log in."""
    from allauth.account.models import EmailAddress
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=email, email=email, password=password, **extra)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def password() -> str:
    return "correct horse battery staple"


@pytest.fixture
def owner(db):
    return make_user("owner@example.com")


@pytest.fixture
def outsider(db):
    return make_user("outsider@example.com")


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """Record hand-offs to the worker (session ids) instead of sending them: the test drives the engine."""
    calls: list[int] = []
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", calls.append)
    return calls


@pytest.fixture
def instant_demo(settings):
    """The Demo provider streams without pacing (DEMO_TOKENS_PER_SECOND = 0); yields `settings`."""
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 0
    clear_adapter_cache()
    yield settings
    clear_adapter_cache()


@pytest.fixture
def live_app(request, transactional_db):
    """The real daphne server and a django-q2 worker against the test database (tests.live.start_app).

    A `@pytest.mark.live_app(**options)` marker on the test or its module passes `options` to start_app
    over these defaults: nothing seeded (`seed=True` seeds the model catalogue and presets first), a
    worker (`worker=False`: daphne alone); any other option is the worker's environment, e.g.
    `DEMO_TOKENS_PER_SECOND="40"`.
    """
    from tests.live import start_app

    marker = request.node.get_closest_marker("live_app")
    app = start_app(**{"seed": False, **(marker.kwargs if marker else {})})
    yield app
    app.stop()
