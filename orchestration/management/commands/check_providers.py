"""Show which LLM providers are configured, optionally prove they answer, and list the catalogue per provider."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.models import LLMModel
from orchestration.provider_table import KNOWN_PROVIDERS, SPECS_BY_NAME
from orchestration.providers import check_provider, clear_adapter_cache, provider_configured


def safe_url(url: str) -> str:
    """The base URL without any user:password@ part: credentials never reach the terminal."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts._replace(query="", fragment=""))


def _price(value: Decimal | None) -> str:
    return "–" if value is None else f"${value.normalize():f}"


class Command(BaseCommand):
    help = (
        "For each LLM provider, show whether it is configured (and if not, which environment variable "
        "to set), its base URL (never the key), and the catalogue models that use it, flagging models "
        "without a price (they cannot be used) and disabled ones. With --live, ask each configured "
        "provider to list its models: this proves the URL and key work and spends no tokens. "
        "Exit status: 0, unless --live is given and a configured provider fails (then 1). "
        "Unconfigured providers are reported, not failures."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--live", action="store_true", help="Call each configured provider's model list (no tokens spent)."
        )

    def handle(self, *args: Any, live: bool, **options: Any) -> None:
        providers_config = getattr(settings, "PROVIDERS", {}) or {}
        models_by_provider: dict[str, list[LLMModel]] = {}
        for model in LLMModel.objects.order_by("provider", "sort_order", "display_name"):
            models_by_provider.setdefault(model.provider, []).append(model)
        if live:
            clear_adapter_cache()  # settings may have changed since an adapter was built in this process

        configured = failed = checked = 0
        unusable_models = 0
        for provider in KNOWN_PROVIDERS:
            ok, reason = provider_configured(provider)
            configured += ok
            spec = SPECS_BY_NAME[provider]
            state = self.style.SUCCESS("configured") if ok else self.style.WARNING("not configured")
            self.stdout.write(f"{spec.label} [{provider}]: {state}. {reason}")
            if not spec.offline:
                self._write_connection(provider, providers_config.get(provider) or {})
            if live and ok:
                checked += 1
                if not self._live_check(provider):
                    failed += 1
            elif live:
                self.stdout.write("  Live check: skipped (not configured).")
            unusable_models += self._write_models(models_by_provider.get(provider, []), configured=ok)

        unknown = sorted(set(models_by_provider) - set(KNOWN_PROVIDERS))
        for provider in unknown:
            self.stdout.write(
                self.style.WARNING(f"Unknown provider {provider!r} has {len(models_by_provider[provider])} model(s).")
            )

        unpriced = sum(1 for ms in models_by_provider.values() for m in ms if m.enabled and not m.is_priced)
        enabled = sum(1 for ms in models_by_provider.values() for m in ms if m.enabled)
        summary = (
            f"{configured} of {len(KNOWN_PROVIDERS)} providers configured; {enabled} enabled catalogue model(s), "
            f"{unpriced} without a price, {unusable_models} unusable right now"
        )
        if live:
            summary += f"; live check: {checked - failed} OK, {failed} failed"
        self.stdout.write(summary + ".")
        if live and failed:
            raise CommandError(f"{failed} configured provider(s) failed the live check.", returncode=1)

    def _write_connection(self, provider: str, config: dict[str, Any]) -> None:
        """The provider's base URL (credentials masked) and whether its API key is set (never the key)."""
        spec = SPECS_BY_NAME[provider]
        base_url = config.get("base_url") or ""
        if base_url:
            shown = safe_url(base_url)
        elif spec.sdk_default_url:  # where the SDK sends calls: nobody has to guess
            shown = f"{spec.sdk_default_url} (SDK default)"
        else:
            shown = "(none)"
        key_state = "set" if config.get("api_key") else "not set"
        self.stdout.write(f"  Base URL: {shown}  [{spec.base_url_env}]; API key: {key_state}  [{spec.key_env}]")

    def _live_check(self, provider: str) -> bool:
        """Ask the provider for its model list (no tokens spent) and write the outcome; True when it answered."""
        try:
            good, message = asyncio.run(check_provider(provider))
        except Exception as exc:  # noqa: BLE001 - a check must report, never crash the command
            good, message = False, f"The check itself failed: {type(exc).__name__}."
        if good:
            self.stdout.write(f"  Live check: {self.style.SUCCESS('OK')}. {message}")
        else:
            self.stdout.write(f"  Live check: {self.style.ERROR('FAILED')}. {message}")
        return good

    def _write_models(self, models: list[LLMModel], *, configured: bool) -> int:
        """One line per catalogue model with its prices and flags; returns how many enabled ones are unusable
        (no price, or their provider not configured)."""
        unusable = 0
        if not models:
            self.stdout.write("  Catalogue: no models.")
        for model in models:
            flags = []
            if not model.is_priced:
                flags.append(self.style.ERROR("NO PRICE: cannot be used"))
            if not model.enabled:
                flags.append("disabled")
            elif not configured or not model.is_priced:
                unusable += 1
            prices = (
                f"in {_price(model.input_price_per_mtok)} / cached {_price(model.cached_input_price_per_mtok)} "
                f"/ out {_price(model.output_price_per_mtok)} per Mtok, ×{model.credit_multiplier}"
            )
            flag_text = f"  [{'; '.join(flags)}]" if flags else ""
            self.stdout.write(f"  - {model.model_id}: {model.display_name}; {prices}{flag_text}")
        return unusable
