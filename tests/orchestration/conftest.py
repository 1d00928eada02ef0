"""Fixtures of the engine tests: providers on the fake server, a funded Pro owner, fast retries."""

from __future__ import annotations

import pytest

from billing.services import grant_credits
from orchestration import host
from tests.orchestration.engine_helpers import on_pro_plan


@pytest.fixture
def providers(fake_llm, settings):
    """Every provider pointed at the fake LLM server (3 s timeouts); yields the server."""
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_TIMEOUT_SECONDS = 3
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


@pytest.fixture
def rich_owner(owner):
    """`owner` on the Pro plan with 1,000,000 credits."""
    on_pro_plan(owner)
    grant_credits(user=owner, amount=1_000_000, key="test:topup", description="test credits")
    return owner


@pytest.fixture
def fast_retries(settings, monkeypatch):
    """Two retries per provider call, 10 ms apart."""
    settings.PROVIDER_MAX_RETRIES = 2
    monkeypatch.setattr("orchestration.providers.retry.retry_delay", lambda attempt, retry_after=None: 0.01)


@pytest.fixture
def session_host_of(settings):
    """A fresh session host for the test (ENGINE_SESSIONS_PER_WORKER > 1): call it with the host's capacity and
    ENGINE_HOST_WAIT_SECONDS. At teardown every hosted drive must have ended, and the host is dropped (the next
    test's host is made with its own settings)."""

    def configure(*, capacity: int, wait_seconds: float) -> None:
        settings.ENGINE_SESSIONS_PER_WORKER = capacity
        settings.ENGINE_HOST_WAIT_SECONDS = wait_seconds
        host._host.forget()  # a fresh host with this capacity

    yield configure
    current = host._host.current()
    host._host.forget()
    if current is not None:
        assert current.join(60), "every hosted drive ended"
