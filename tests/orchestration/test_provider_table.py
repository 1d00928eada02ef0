"""The provider table (orchestration/provider_table.py) is the one place a provider is described: a new
OpenAI-compatible entry is callable, configured and reported with no other code change."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from orchestration import provider_table
from orchestration.models import LLMModel
from orchestration.provider_table import OPENAI_ADAPTER, PROVIDER_SPECS, ProviderSpec
from orchestration.providers import (
    ModelRequest,
    ProviderError,
    StreamEnd,
    TextDelta,
    clear_adapter_cache,
    get_adapter,
    provider_available,
    provider_configured,
)

SECRET_KEY = "sk-test-table-0123456789"
MISTRAL = ProviderSpec(
    name="mistral",
    label="Mistral",
    adapter=OPENAI_ADAPTER,
    key_env="MISTRAL_API_KEY",
    base_url_env="MISTRAL_BASE_URL",
    default_base_url="https://api.mistral.ai/v1",
)


@pytest.fixture
def with_mistral(monkeypatch, settings, fake_llm):
    """The table with one more entry, and the settings that entry would give (key and URL from the env)."""
    specs = (*PROVIDER_SPECS, MISTRAL)
    monkeypatch.setattr(provider_table, "SPECS_BY_NAME", {spec.name: spec for spec in specs})
    monkeypatch.setattr(provider_table, "KNOWN_PROVIDERS", tuple(spec.name for spec in specs))
    from orchestration.management.commands import check_providers

    monkeypatch.setattr(check_providers, "KNOWN_PROVIDERS", provider_table.KNOWN_PROVIDERS)
    monkeypatch.setattr(check_providers, "SPECS_BY_NAME", provider_table.SPECS_BY_NAME)
    settings.PROVIDERS = {**fake_llm.provider_settings(api_key=SECRET_KEY)}
    settings.PROVIDERS["mistral"] = {"api_key": SECRET_KEY, "base_url": fake_llm.openai_url}
    settings.PROVIDER_TIMEOUT_SECONDS = 5.0
    fake_llm.expected_api_key = SECRET_KEY
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


async def test_a_new_openai_compatible_entry_streams_through_the_openai_sdk(with_mistral):
    with_mistral.reply("Bees need water nearby.")
    adapter = get_adapter("mistral")
    request = ModelRequest(provider="mistral", model_id="mistral-small", system="You edit.", user="Draft.")

    events = [event async for event in adapter.stream(request)]

    assert type(adapter).__name__ == "OpenAIAdapter"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Bees need water nearby."
    assert isinstance(events[-1], StreamEnd) and events[-1].usage.output_tokens > 0
    assert with_mistral.requests[-1].path.endswith("/chat/completions")
    assert adapter.display_name == "Mistral"


def test_a_new_entry_without_a_key_names_its_variable_to_operators_and_not_to_users(with_mistral, settings):
    settings.PROVIDERS["mistral"] = {"api_key": "", "base_url": ""}

    ok, operator_reason = provider_configured("mistral")
    user_ok, user_reason = provider_available("mistral")
    with pytest.raises(ProviderError) as caught:
        get_adapter("mistral")

    assert not ok and "Set MISTRAL_API_KEY" in operator_reason
    assert not user_ok and "Mistral is not connected" in user_reason and "MISTRAL_API_KEY" not in user_reason
    assert caught.value.kind == "not_configured"


@pytest.mark.django_db
def test_check_providers_lists_a_new_entry_with_its_variables(with_mistral):
    out = StringIO()

    call_command("check_providers", stdout=out)

    text = out.getvalue()
    assert "Mistral [mistral]: configured." in text
    assert "[MISTRAL_BASE_URL]; API key: set  [MISTRAL_API_KEY]" in text


def test_settings_configure_every_provider_of_the_table_and_nothing_else():
    configurable = {spec.name for spec in PROVIDER_SPECS if not spec.offline}

    assert set(django_settings.PROVIDERS) == configurable
    assert {name for name, _label in LLMModel._meta.get_field("provider").choices} == {
        spec.name for spec in PROVIDER_SPECS
    }


def test_the_readme_documents_every_providers_variables():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")

    missing = [
        variable
        for spec in PROVIDER_SPECS
        for variable in (spec.key_env, spec.base_url_env)
        if variable and f"`{variable}`" not in readme
    ]

    assert missing == []


def test_the_table_keeps_each_providers_temperature_and_reasoning_rules():
    from orchestration.providers.http_adapters import sends_temperature

    assert sends_temperature("openai", "gpt-4.1") is True
    assert sends_temperature("openai", "gpt-5-mini") is False  # OpenAI reasoning models refuse it
    assert sends_temperature("gemini", "gpt-5-lookalike") is True  # only OpenAI serves those models
    assert sends_temperature("anthropic", "claude-sonnet-4-5") is False
    assert sends_temperature("demo", "demo-writer") is False
    assert sends_temperature("unknown-server", "any") is True
