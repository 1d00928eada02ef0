"""The one table of LLM providers: everything the code knows about a provider, in one entry.

Settings (which environment variables configure it), the catalogue's `Provider` choices, the adapter
registry (`orchestration.providers.get_adapter`), `manage.py check_providers`, operator error messages
and the admin's reasoning checks all read this table. Adding an OpenAI-compatible provider is one entry
here (docs/providers.md, "Adding a provider"); a new wire protocol also needs an adapter class.

Deliberately free of Django imports: atelier/settings.py imports it to build `PROVIDERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ANTHROPIC_ADAPTER: Final = "orchestration.providers.http_adapters.AnthropicAdapter"
OPENAI_ADAPTER: Final = "orchestration.providers.http_adapters.OpenAIAdapter"
DEMO_ADAPTER: Final = "orchestration.providers.demo.DemoAdapter"


@dataclass(frozen=True)
class ProviderSpec:
    """One provider.

    name: the stored value (`LLMModel.provider`), lower case, at most 20 characters.
    label: the name shown to users and operators.
    choice_label: the label of the catalogue's choice (admin), when it says more than `label`.
    key_env / base_url_env: the environment variables that configure it ("" for the offline demo); each
        secret may also come from `<key_env>_FILE`.
    default_base_url: the base URL used when `base_url_env` is unset ("" = the SDK's own default).
    sdk_default_url: where the SDK sends calls when no base URL is set, shown by check_providers.
    adapter: dotted path of the adapter class (a `BaseAdapter` subclass).
    needs_key: whether a call needs `key_env` set; otherwise it needs a base URL (self-hosted servers).
    offline: the demo provider: no configuration, no network, not a language model.
    sends_temperature: whether an agent's temperature reaches its models (see `openai_reasoning_models`).
    openai_reasoning_models: serves OpenAI's reasoning models (gpt-5, o-series): those get no temperature,
        and the provider takes `max_completion_tokens` instead of `max_tokens`.
    thinking_budget: its models may use extended thinking with a token budget (Anthropic's API).
    reasoning_effort: its models may take a reasoning effort low / medium / high (OpenAI-style APIs).
    """

    name: str
    label: str
    adapter: str
    choice_label: str = ""
    key_env: str = ""
    base_url_env: str = ""
    default_base_url: str = ""
    sdk_default_url: str = ""
    needs_key: bool = True
    offline: bool = False
    sends_temperature: bool = True
    openai_reasoning_models: bool = False
    thinking_budget: bool = False
    reasoning_effort: bool = True

    @property
    def long_label(self) -> str:
        """The catalogue choice's label: `choice_label` if set, else `label`."""
        return self.choice_label or self.label


DEMO = "demo"

# In the order the catalogue's choices list them.
PROVIDER_SPECS: Final[tuple[ProviderSpec, ...]] = (
    ProviderSpec(
        name=DEMO,
        label="Demo (offline, not a language model)",
        adapter=DEMO_ADAPTER,
        needs_key=False,
        offline=True,
        sends_temperature=False,
        reasoning_effort=False,
    ),
    ProviderSpec(
        name="anthropic",
        label="Anthropic",
        adapter=ANTHROPIC_ADAPTER,
        key_env="ANTHROPIC_API_KEY",
        base_url_env="ANTHROPIC_BASE_URL",
        sdk_default_url="https://api.anthropic.com",
        # This SDK generation dropped sampling parameters from the Messages API.
        sends_temperature=False,
        thinking_budget=True,
        reasoning_effort=False,
    ),
    ProviderSpec(
        name="openai",
        label="OpenAI",
        adapter=OPENAI_ADAPTER,
        key_env="OPENAI_API_KEY",
        base_url_env="OPENAI_BASE_URL",
        sdk_default_url="https://api.openai.com/v1",
        openai_reasoning_models=True,
    ),
    ProviderSpec(
        name="gemini",
        label="Google Gemini",
        adapter=OPENAI_ADAPTER,
        key_env="GEMINI_API_KEY",
        base_url_env="GEMINI_BASE_URL",
        default_base_url="https://generativelanguage.googleapis.com/v1beta/openai/",
    ),
    ProviderSpec(
        name="xai",
        label="xAI",
        adapter=OPENAI_ADAPTER,
        key_env="XAI_API_KEY",
        base_url_env="XAI_BASE_URL",
        default_base_url="https://api.x.ai/v1",
    ),
    # Ollama / vLLM / llama.cpp: any OpenAI-compatible server; a key is optional, the base URL is not.
    ProviderSpec(
        name="compatible",
        label="OpenAI-compatible server",
        choice_label="OpenAI-compatible server (Ollama, vLLM, llama.cpp)",
        adapter=OPENAI_ADAPTER,
        key_env="COMPATIBLE_API_KEY",
        base_url_env="COMPATIBLE_BASE_URL",
        needs_key=False,
    ),
)

SPECS_BY_NAME: Final[dict[str, ProviderSpec]] = {spec.name: spec for spec in PROVIDER_SPECS}
KNOWN_PROVIDERS: Final[tuple[str, ...]] = tuple(spec.name for spec in PROVIDER_SPECS)

# Derived views, for callers that want one attribute by name.
PROVIDER_LABELS: Final[dict[str, str]] = {spec.name: spec.label for spec in PROVIDER_SPECS}
KEY_ENV_VARS: Final[dict[str, str]] = {spec.name: spec.key_env for spec in PROVIDER_SPECS if spec.key_env}
BASE_URL_ENV_VARS: Final[dict[str, str]] = {
    spec.name: spec.base_url_env for spec in PROVIDER_SPECS if spec.base_url_env
}


def provider_spec(name: str) -> ProviderSpec | None:
    """The table's entry for `name`, or None for a provider the table does not know."""
    return SPECS_BY_NAME.get(name)


def provider_label(name: str) -> str:
    """The label users see for provider `name`; the name itself for a provider the table does not know."""
    spec = SPECS_BY_NAME.get(name)
    return spec.label if spec else name


def sends_temperature(provider: str, model_id: str, *, reasoning_prefixes: tuple[str, ...]) -> bool:
    """Whether an agent's temperature reaches `model_id` of `provider`: never for providers that refuse it,
    nor for OpenAI's reasoning models (ids starting with one of `reasoning_prefixes`). Unknown providers
    are treated as OpenAI-compatible servers (they get it)."""
    spec = SPECS_BY_NAME.get(provider)
    if spec is None:
        return True
    if not spec.sends_temperature:
        return False
    return not (spec.openai_reasoning_models and model_id.startswith(reasoning_prefixes))
