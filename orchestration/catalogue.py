"""The model catalogue seed, and the rule that an unpriced or disabled model cannot be used.

Prices are USD per million tokens (input, cached input, output) at the providers' list prices for
standard (non-batch) requests, as of late 2026 to the best of our knowledge. Staff keep them current
in the admin; the seed only creates missing rows and never overwrites what staff changed unless asked.

Reasoning (docs/architecture.md, "Reasoning models"): the Claude 4 family accepts extended thinking
with a token budget and returns a summary of its thinking; gpt-5 and gpt-5 mini accept
`reasoning_effort` and return only a count of reasoning tokens through Chat Completions. Gemini and
xAI rows carry no reasoning control until staff decide their OpenAI-compatible endpoints should get
`reasoning_effort`.

Credit multipliers: 1.00 for the cheap models, 1.25-3.00 for the flagships (their calls are long and
bursty, and a higher multiplier keeps plans' credit allowances meaningful). Billing turns provider cost
into credits with them (see billing/pricing.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.apps.registry import Apps

    from orchestration.models import LLMModel

D = Decimal

CATALOGUE: list[dict[str, Any]] = [
    # Priced at zero, which is still a price: billing charges demo calls by tokens (billing/pricing.py).
    {
        "provider": "demo",
        "model_id": "demo-writer",
        "display_name": "Demo (offline, not a language model)",
        "context_window": 200_000,
        "max_output_tokens": 8_192,
        "input_price_per_mtok": D("0"),
        "cached_input_price_per_mtok": D("0"),
        "output_price_per_mtok": D("0"),
        "credit_multiplier": D("1.00"),
        "enabled": True,
        "sort_order": 10,
    },
    # Anthropic. Cached input = cache reads (0.1x input); cache writes (1.25x input) are billed by the engine.
    {
        "provider": "anthropic",
        "model_id": "claude-opus-4-5",
        "display_name": "Claude Opus 4.5",
        "context_window": 200_000,
        "max_output_tokens": 64_000,
        "input_price_per_mtok": D("5.00"),
        "cached_input_price_per_mtok": D("0.50"),
        "output_price_per_mtok": D("25.00"),
        "credit_multiplier": D("2.00"),
        "reasoning": "thinking_budget",
        "reasoning_output": "summary",
        "enabled": True,
        "sort_order": 10,
    },
    {
        "provider": "anthropic",
        "model_id": "claude-opus-4-1",
        "display_name": "Claude Opus 4.1",
        "context_window": 200_000,
        "max_output_tokens": 32_000,
        "input_price_per_mtok": D("15.00"),
        "cached_input_price_per_mtok": D("1.50"),
        "output_price_per_mtok": D("75.00"),
        "credit_multiplier": D("3.00"),
        "reasoning": "thinking_budget",
        "reasoning_output": "summary",
        "enabled": True,
        "sort_order": 20,
    },
    {
        "provider": "anthropic",
        "model_id": "claude-sonnet-4-5",
        "display_name": "Claude Sonnet 4.5",
        "context_window": 200_000,
        "max_output_tokens": 64_000,
        "input_price_per_mtok": D("3.00"),
        "cached_input_price_per_mtok": D("0.30"),
        "output_price_per_mtok": D("15.00"),
        "credit_multiplier": D("1.50"),
        "reasoning": "thinking_budget",
        "reasoning_output": "summary",
        "enabled": True,
        "sort_order": 30,
    },
    {
        "provider": "anthropic",
        "model_id": "claude-haiku-4-5",
        "display_name": "Claude Haiku 4.5",
        "context_window": 200_000,
        "max_output_tokens": 64_000,
        "input_price_per_mtok": D("1.00"),
        "cached_input_price_per_mtok": D("0.10"),
        "output_price_per_mtok": D("5.00"),
        "credit_multiplier": D("1.00"),
        "reasoning": "thinking_budget",
        "reasoning_output": "summary",
        "enabled": True,
        "sort_order": 40,
    },
    # OpenAI. Cached input is the automatic prompt-cache discount.
    {
        "provider": "openai",
        "model_id": "gpt-5",
        "display_name": "GPT-5",
        "context_window": 400_000,
        "max_output_tokens": 128_000,
        "input_price_per_mtok": D("1.25"),
        "cached_input_price_per_mtok": D("0.125"),
        "output_price_per_mtok": D("10.00"),
        "credit_multiplier": D("1.50"),
        "reasoning": "effort",
        "reasoning_output": "hidden",
        "enabled": True,
        "sort_order": 10,
    },
    {
        "provider": "openai",
        "model_id": "gpt-5-mini",
        "display_name": "GPT-5 mini",
        "context_window": 400_000,
        "max_output_tokens": 128_000,
        "input_price_per_mtok": D("0.25"),
        "cached_input_price_per_mtok": D("0.025"),
        "output_price_per_mtok": D("2.00"),
        "credit_multiplier": D("1.00"),
        "reasoning": "effort",
        "reasoning_output": "hidden",
        "enabled": True,
        "sort_order": 20,
    },
    {
        "provider": "openai",
        "model_id": "gpt-4.1",
        "display_name": "GPT-4.1",
        "context_window": 1_047_576,
        "max_output_tokens": 32_768,
        "input_price_per_mtok": D("2.00"),
        "cached_input_price_per_mtok": D("0.50"),
        "output_price_per_mtok": D("8.00"),
        "credit_multiplier": D("1.25"),
        "enabled": True,
        "sort_order": 30,
    },
    {
        "provider": "openai",
        "model_id": "gpt-4o-mini",
        "display_name": "GPT-4o mini",
        "context_window": 128_000,
        "max_output_tokens": 16_384,
        "input_price_per_mtok": D("0.15"),
        "cached_input_price_per_mtok": D("0.075"),
        "output_price_per_mtok": D("0.60"),
        "credit_multiplier": D("1.00"),
        "enabled": True,
        "sort_order": 40,
    },
    # Google Gemini through its OpenAI-compatible endpoint. Prices are the <=200k-token prompt tier;
    # 2.5 Pro charges more above 200k, so its multiplier leaves room for that.
    {
        "provider": "gemini",
        "model_id": "gemini-2.5-pro",
        "display_name": "Gemini 2.5 Pro",
        "context_window": 1_048_576,
        "max_output_tokens": 65_536,
        "input_price_per_mtok": D("1.25"),
        "cached_input_price_per_mtok": D("0.31"),
        "output_price_per_mtok": D("10.00"),
        "credit_multiplier": D("1.50"),
        "enabled": True,
        "sort_order": 10,
    },
    {
        "provider": "gemini",
        "model_id": "gemini-2.5-flash",
        "display_name": "Gemini 2.5 Flash",
        "context_window": 1_048_576,
        "max_output_tokens": 65_536,
        "input_price_per_mtok": D("0.30"),
        "cached_input_price_per_mtok": D("0.075"),
        "output_price_per_mtok": D("2.50"),
        "credit_multiplier": D("1.00"),
        "enabled": True,
        "sort_order": 20,
    },
    # xAI through its OpenAI-compatible endpoint.
    {
        "provider": "xai",
        "model_id": "grok-4",
        "display_name": "Grok 4",
        "context_window": 256_000,
        "max_output_tokens": 32_768,
        "input_price_per_mtok": D("3.00"),
        "cached_input_price_per_mtok": D("0.75"),
        "output_price_per_mtok": D("15.00"),
        "credit_multiplier": D("1.50"),
        "enabled": True,
        "sort_order": 10,
    },
    {
        "provider": "xai",
        "model_id": "grok-3-mini",
        "display_name": "Grok 3 mini",
        "context_window": 131_072,
        "max_output_tokens": 16_384,
        "input_price_per_mtok": D("0.30"),
        "cached_input_price_per_mtok": D("0.075"),
        "output_price_per_mtok": D("0.50"),
        "credit_multiplier": D("1.00"),
        "enabled": True,
        "sort_order": 20,
    },
    # A local model on an OpenAI-compatible server (COMPATIBLE_BASE_URL, e.g. Ollama's
    # http://127.0.0.1:11434/v1). Llama 3.1 accepts 128k tokens, but Ollama serves a much smaller window
    # unless told otherwise: start it with OLLAMA_CONTEXT_LENGTH=8192 (or more, then raise this row).
    {
        "provider": "compatible",
        "model_id": "llama3.1:8b",
        "display_name": "Llama 3.1 8B (local, Ollama)",
        "context_window": 8_192,
        "max_output_tokens": 4_096,
        "input_price_per_mtok": D("0"),
        "cached_input_price_per_mtok": D("0"),
        "output_price_per_mtok": D("0"),
        "credit_multiplier": D("1.00"),
        "enabled": True,
        "sort_order": 10,
    },
]

PRICE_FIELDS = ("input_price_per_mtok", "cached_input_price_per_mtok", "output_price_per_mtok")


def _model_class(apps: Apps | None = None) -> type[LLMModel]:
    if apps is not None:
        # A data migration passes its historical app registry; its LLMModel has the fields the
        # callers touch (seed_catalogue skips the ones an older migration's model lacks).
        return apps.get_model("orchestration", "LLMModel")
    from orchestration.models import LLMModel

    return LLMModel


def seed_catalogue(apps: Apps | None = None, *, update_existing: bool = False) -> int:
    """Create the catalogue's rows; returns how many rows were created or changed. Idempotent.

    Rows are matched on (provider, model_id). An existing row only gets prices it is missing, so
    running the seed again never undoes a price or multiplier staff changed in the admin; pass
    `update_existing=True` to reset every seeded field to the values above.
    """
    model_class = _model_class(apps)
    # An older migration's historical model lacks fields added later (reasoning, ...): skip those.
    known = {field.name for field in model_class._meta.get_fields()}
    changed = 0
    for entry in CATALOGUE:
        defaults = {key: value for key, value in entry.items() if key not in ("provider", "model_id") and key in known}
        row = model_class.objects.filter(provider=entry["provider"], model_id=entry["model_id"]).first()
        if row is None:
            model_class.objects.create(provider=entry["provider"], model_id=entry["model_id"], **defaults)
            changed += 1
            continue
        fields = defaults.keys() if update_existing else [f for f in PRICE_FIELDS if getattr(row, f) is None]
        updates = [f for f in fields if getattr(row, f) != defaults[f]]
        if updates:
            for name in updates:
                setattr(row, name, defaults[name])
            row.save(update_fields=updates)
            changed += 1
    return changed


def seed_reasoning(apps: Apps | None = None) -> int:
    """Give seeded rows that have no reasoning control yet the catalogue's one; returns rows changed.

    Used by the migration that added the reasoning fields. A row staff already configured (reasoning
    set) is left alone.
    """
    model_class = _model_class(apps)
    changed = 0
    for entry in CATALOGUE:
        if not entry.get("reasoning"):
            continue
        changed += model_class.objects.filter(
            provider=entry["provider"], model_id=entry["model_id"], reasoning=""
        ).update(reasoning=entry["reasoning"], reasoning_output=entry["reasoning_output"])
    return changed


def _name(model: LLMModel) -> str:
    return getattr(model, "display_name", "") or getattr(model, "model_id", "") or "This model"


def unpriced_error(model: LLMModel) -> str | None:
    """The error for a model without input or output price (cached input may stay empty: no discount)."""
    if model.input_price_per_mtok is None or model.output_price_per_mtok is None:
        return f"{_name(model)} has no price in the catalogue; ask staff to set it before using it."
    return None


def validate_model_for_use(model: LLMModel | None) -> str | None:
    """Why this catalogue model cannot be used right now, in words for the user; None when it can."""
    if model is None:
        return "Choose a model from the catalogue."
    if not model.enabled:
        return f"{_name(model)} is disabled in the catalogue; choose another model."
    return unpriced_error(model)


def takes_temperature(model: LLMModel) -> bool:
    """Whether an agent's temperature is sent to this catalogue model (see docs/providers.md)."""
    from orchestration.providers.http_adapters import sends_temperature

    return sends_temperature(model.provider, model.model_id)


def temperature_help(model: LLMModel | None, offered: Iterable[LLMModel]) -> str:
    """The builder's words under the temperature field: which models ignore it, and whether this agent's does.

    `model`: the agent's current model (or None); `offered`: the catalogue models the form offers.
    """
    ignored = [m.display_name for m in offered if not takes_temperature(m)]
    parts = []
    if model is not None and not takes_temperature(model):
        parts.append(f"Not sent to {_name(model)}: it uses its own default.")
    elif model is not None:
        parts.append(f"Sent to {_name(model)}.")
    if ignored:
        parts.append("Ignored by " + ", ".join(ignored) + ".")
    return " ".join(parts)
