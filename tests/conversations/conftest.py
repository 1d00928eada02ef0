"""Fixtures for conversation tests: a project, a funded owner, providers pointed at the fake server."""

from __future__ import annotations

import pytest

from billing.services import grant_credits
from orchestration.conversations import services as conversations
from orchestration.models import Project


@pytest.fixture
def providers(fake_llm, settings):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_TIMEOUT_SECONDS = 3
    settings.DEMO_TOKENS_PER_SECOND = 0
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


@pytest.fixture
def enqueued(monkeypatch):
    """Record hand-offs to the worker instead of running them: the test drives the runner itself."""
    calls: list[int] = []
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", calls.append)
    return calls


@pytest.fixture
def funded_owner(owner):
    from orchestration.catalogue import seed_catalogue

    seed_catalogue()  # transactional tests flush the seeded catalogue: the Demo model comes back here
    grant_credits(user=owner, amount=100_000, key="test:topup", description="test credits")
    return owner


@pytest.fixture
def project(funded_owner):
    return Project.objects.create(owner=funded_owner, name="Urban trees")


@pytest.fixture
def conversation(project, funded_owner):
    return conversations.create_conversation(project=project, user=funded_owner)
