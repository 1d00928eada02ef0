"""What the debug 500 page and error e-mails may show: no secrets (issue 9, case 10).

Django's SafeExceptionReporterFilter hides *settings* whose names look sensitive, but shows every
local variable of every frame unless the function is decorated with ``@sensitive_variables``. A
Stripe call that fails shows ``api_key`` in the SDK's frames, and dj-stripe's webhook code has the
endpoint secret in hand. This filter also hides frame variables with sensitive names and masks
any value that contains a secret we know (the configured keys) or looks like one (Stripe keys and
webhook secrets, provider API keys).
"""

from __future__ import annotations

import re
from collections.abc import ItemsView
from types import FrameType
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter

# sk_/rk_/pk_ live and test keys, whsec_ webhook secrets, Anthropic/OpenAI style keys.
_SECRET_VALUE = re.compile(r"\b(?:(?:sk|rk)_(?:live|test)_|whsec_|sk-ant-|sk-proj-)[A-Za-z0-9_\-]{6,}")


def configured_secrets() -> list[str]:
    """Every secret value in the settings (keys of Stripe and the providers, SMTP password)."""
    values = [
        getattr(settings, "STRIPE_LIVE_SECRET_KEY", ""),
        getattr(settings, "STRIPE_TEST_SECRET_KEY", ""),
        getattr(settings, "EMAIL_HOST_PASSWORD", ""),
        getattr(settings, "SECRET_KEY", ""),
    ]
    values += [p.get("api_key", "") for p in getattr(settings, "PROVIDERS", {}).values()]
    return [v for v in values if v and len(v) >= 8 and v != "sk_test_not_configured"]


# The password in postgres://user:password@host/ and redis://:password@host/ URLs.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")


def mask_secrets(text: str) -> str:
    """``text`` with every secret replaced by the cleansed-value marker."""
    marker = SafeExceptionReporterFilter.cleansed_substitute
    for secret in configured_secrets():
        text = text.replace(secret, marker)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{marker}@", text)
    return _SECRET_VALUE.sub(marker, text)


class SecretsFilter(SafeExceptionReporterFilter):
    """SafeExceptionReporterFilter that also cleans frame variables (names and values)."""

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: FrameType) -> ItemsView[str, Any]:
        cleansed: dict[str, Any] = {}
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if self.hidden_settings.search(name):
                value = self.cleansed_substitute
            else:
                try:
                    text = repr(value)
                except Exception:  # noqa: BLE001 - a broken __repr__ must not break the error page
                    text = ""
                if text and mask_secrets(text) != text:
                    value = mask_secrets(text)
            cleansed[name] = value
        return cleansed.items()  # what Django's own filter returns

    def get_safe_settings(self) -> dict[str, Any]:
        safe = super().get_safe_settings()
        return {key: self._mask(value) for key, value in safe.items()}

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str):
            return mask_secrets(value)
        if isinstance(value, dict):
            return {k: self._mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._mask(v) for v in value)
        return value
