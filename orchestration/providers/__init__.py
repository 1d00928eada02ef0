"""Provider adapters behind one streaming protocol (see base.py), and the registry that builds them.

    adapter = get_adapter("anthropic")
    async with contextlib.aclosing(adapter.stream(request)) as events:
        async for event in events: ...   # TextDelta..., then one StreamEnd; or ProviderError

Configuration comes only from settings.PROVIDERS (the environment); keys are never logged.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.utils.module_loading import import_string

from orchestration.provider_table import DEMO, KNOWN_PROVIDERS, provider_spec
from orchestration.providers.base import (
    BaseAdapter,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
)
from orchestration.providers.demo import DEMO_LABEL
from orchestration.providers.retry import retry_delay

__all__ = [
    "DEMO_LABEL",
    "KNOWN_PROVIDERS",
    "ModelRequest",
    "ProviderError",
    "ReasoningDelta",
    "StreamEnd",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "Usage",
    "check_provider",
    "clear_adapter_cache",
    "get_adapter",
    "provider_available",
    "provider_configured",
    "retry_delay",
]

# Adapters by configuration: ("demo", tokens per second) or (provider, key, base URL, timeout seconds).
_cache: dict[tuple[object, ...], BaseAdapter] = {}
_cache_lock = threading.Lock()


def _config(provider: str) -> dict[str, str]:
    return dict((getattr(settings, "PROVIDERS", {}) or {}).get(provider) or {})


def provider_configured(provider: str) -> tuple[bool, str]:
    """(ok, reason): whether a call could be attempted at all. Says nothing about the key being valid."""
    spec = provider_spec(provider)
    if spec is None:
        return False, f"Unknown provider {provider!r}."
    if spec.offline:
        return True, "The demo provider works offline and needs no key."
    config = _config(provider)
    if not spec.needs_key:
        if not config.get("base_url"):
            return False, (
                f"{spec.label} has no base URL. Set {spec.base_url_env} (for example http://127.0.0.1:11434/v1)."
            )
        return True, f"{spec.label} at its configured base URL (a key is optional)."
    if not config.get("api_key"):
        return False, f"{spec.label} is not configured. Set {spec.key_env}."
    return True, f"{spec.label} has an API key."


def provider_available(provider: str) -> tuple[bool, str]:
    """(ok, reason) for users: whether models of `provider` can run on this server, in words a user can
    act on. Never names an environment variable or a URL: that is operator detail, shown to staff by
    `provider_configured` (the admin's model list, `manage.py check_providers`)."""
    ok, _operator_reason = provider_configured(provider)
    if ok:
        return True, ""
    spec = provider_spec(provider)
    name = spec.label if spec else "This provider"
    return False, f"{name} is not connected on this server, so its models cannot run. Choose another model."


def get_adapter(provider: str, *, timeout: float | None = None) -> BaseAdapter:
    """The adapter for a provider, cached per configuration (a changed setting builds a new one).

    Raises ProviderError(kind="not_configured") when the provider cannot be called.
    """
    ok, _operator_reason = provider_configured(provider)
    if not ok:
        _ok, reason = provider_available(provider)
        raise ProviderError(reason, kind="not_configured", retryable=False, provider=provider)
    if provider == DEMO:
        key: tuple[object, ...] = (DEMO, float(settings.DEMO_TOKENS_PER_SECOND))
    else:
        config = _config(provider)
        seconds = float(timeout if timeout is not None else settings.PROVIDER_TIMEOUT_SECONDS)
        key = (provider, config.get("api_key") or "", config.get("base_url") or "", seconds)
    with _cache_lock:
        adapter = _cache.get(key)
        if adapter is None:
            adapter = _cache[key] = _build(provider, key)
    return adapter


def _build(provider: str, key: tuple[object, ...]) -> BaseAdapter:
    spec = provider_spec(provider)
    assert spec is not None  # provider_configured refused unknown providers
    cls = import_string(spec.adapter)
    if spec.offline:
        adapter: BaseAdapter = cls(tokens_per_second=key[1])
        return adapter
    _, api_key, base_url, seconds = key
    adapter = cls(provider=provider, api_key=api_key, base_url=base_url, timeout=seconds)
    return adapter


def clear_adapter_cache() -> None:
    with _cache_lock:
        _cache.clear()


async def check_provider(provider: str) -> tuple[bool, str]:
    """(ok, message) for operators (`manage.py check_providers`): whether the provider answers with this
    configuration, without spending tokens (lists models). Unlike users' messages, it names the setting."""
    configured, operator_reason = provider_configured(provider)
    if not configured:
        return False, operator_reason
    adapter = get_adapter(provider)
    ok, message = await adapter.check()
    spec = provider_spec(provider)
    if not ok and spec and spec.key_env and ("(401)" in message or "(403)" in message):
        message = f"{message} Check {spec.key_env}."
    return ok, message
