"""Turn SDK and transport exceptions into one ProviderError vocabulary.

Both SDKs run with max_retries=0: this classification feeds the engine's single retry layer.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from typing import Any

import anthropic
import httpx2
import openai

from orchestration.provider_table import provider_label, provider_spec
from orchestration.providers.base import ProviderError, redact

STATUS_ERRORS = (anthropic.APIStatusError, openai.APIStatusError)
TIMEOUT_ERRORS = (anthropic.APITimeoutError, openai.APITimeoutError, httpx2.TimeoutException)
CONNECTION_ERRORS = (anthropic.APIConnectionError, openai.APIConnectionError, httpx2.TransportError)
SDK_ERRORS = (anthropic.AnthropicError, openai.OpenAIError)

logger = logging.getLogger(__name__)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_info(body: object) -> tuple[str, str, str]:
    """(type, code, message) from either API's error body, whichever nesting the SDK kept."""
    if not isinstance(body, dict):
        return "", "", str(body or "")
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return "", "", str(inner)
    return str(inner.get("type") or ""), str(inner.get("code") or ""), str(inner.get("message") or "")


def _server_detail(message: str, api_key: str | None) -> str:
    message = redact(" ".join(message.split()), api_key)
    return message[:200]


# The providers' own words for a prompt over the context window (their 400 bodies, late 2026):
# Anthropic: "prompt is too long: 208310 tokens > 200000 maximum"
#            "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input ..."
# OpenAI:    code "context_length_exceeded", "This model's maximum context length is 128000 tokens. However, your
#            messages resulted in 130000 tokens. ..." (newer models: "Your input exceeds the context window ...")
_ANTHROPIC_TOO_LONG = re.compile(r"prompt is too long:\s*([\d,]+)\s*tokens?\s*>\s*([\d,]+)", re.I)
_ANTHROPIC_WITH_OUTPUT = re.compile(r"exceed context limit:\s*([\d,]+)\s*\+\s*([\d,]+)\s*>\s*([\d,]+)", re.I)
_OPENAI_MAX = re.compile(r"maximum context length is\s*([\d,]+)\s*tokens", re.I)
_OPENAI_RESULTED = re.compile(r"resulted in\s*([\d,]+)\s*tokens", re.I)
_OPENAI_OUTPUT = re.compile(r"\(([\d,]+) in the messages,\s*([\d,]+) in the completion\)", re.I)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def context_overflow(*, code: str, message: str) -> tuple[int | None, int | None] | None:
    """(prompt tokens, context window) from a "prompt too long" error, or None for other errors.

    Both are the provider's own token counts; either may be None when the message does not give it.
    """
    if match := _ANTHROPIC_TOO_LONG.search(message):
        return _int(match.group(1)), _int(match.group(2))
    if match := _ANTHROPIC_WITH_OUTPUT.search(message):
        return _int(match.group(1)), _int(match.group(3))
    lowered = message.lower()
    if code == "context_length_exceeded" or "maximum context length" in lowered or "context window" in lowered:
        window = _int(m.group(1)) if (m := _OPENAI_MAX.search(message)) else None
        if m := _OPENAI_OUTPUT.search(message):
            prompt: int | None = _int(m.group(1))
        else:
            prompt = _int(m.group(1)) if (m := _OPENAI_RESULTED.search(message)) else None
        return prompt, window
    return None


def from_status(*, provider: str, status: int, headers: Any, body: object, api_key: str | None) -> ProviderError:
    name = provider_label(provider)
    spec = provider_spec(provider)
    env_var = (spec and spec.key_env) or "the API key setting"
    # Users read these messages (stop details, turn cards): they say what happened in words a user can act
    # on; the setting to fix is operator detail, logged here and shown to staff by `check_providers`.
    operator_action = "the site's operator needs to fix it"
    err_type, code, message = _error_info(body)
    detail = _server_detail(message, api_key)
    retry_after = parse_retry_after(headers)

    def err(kind: str, text: str, retryable: bool) -> ProviderError:
        return ProviderError(
            text,
            kind=kind,
            retryable=retryable,
            retry_after=retry_after if retryable else None,
            status=status,
            provider=provider,
        )

    # A stream can report an error inside a 200 response: classify by the error type first.
    if err_type == "overloaded_error" or status == 529:
        return err("overloaded", f"{name} was overloaded ({status}).", True)
    if err_type == "rate_limit_error" or status == 429:
        if code == "insufficient_quota" or err_type == "insufficient_quota":
            return err(
                "rate_limit", f"The {name} account on this server has run out of quota (429); {operator_action}.", False
            )
        return err("rate_limit", f"{name} answered with its rate limit (429).", True)
    if err_type == "authentication_error" or status == 401:
        logger.warning("%s rejected the API key (401): check %s", name, env_var)
        return err("auth", f"The {name} API key on this server was rejected (401); {operator_action}.", False)
    if err_type == "permission_error" or status == 403:
        logger.warning("%s refused the API key for this model (403): check %s and the model's access", name, env_var)
        return err("auth", f"The {name} API key on this server may not use this model (403); {operator_action}.", False)
    if status == 404:
        base_url_var = _base_url_env(provider)
        logger.warning("%s answered 404: check the model id and %s", name, base_url_var)
        hint = " The model id or this server's connection to it is wrong; choose another model or tell the operator."
        return err("bad_request", f"{name} did not find the model or endpoint (404).{hint} {detail}".strip(), False)
    if status == 408:
        return err("timeout", f"{name} timed out handling the request (408).", True)
    if status == 409 or status >= 500 or err_type == "api_error":
        return err("server", f"{name} had a server error ({status}).", True)
    if status in (400, 413) or err_type == "invalid_request_error":
        too_long = context_overflow(code=code, message=message)
        if too_long is not None:
            prompt_tokens, limit_tokens = too_long
            counts = f" ({prompt_tokens:,} tokens, window {limit_tokens:,})" if prompt_tokens and limit_tokens else ""
            error = err("context_length", f"The prompt was too long for the model{counts}: {detail}".strip(), False)
            error.prompt_tokens, error.limit_tokens = prompt_tokens, limit_tokens
            return error
    if 400 <= status < 500:
        return err("bad_request", f"{name} refused the request ({status}): {detail or 'bad request'}", False)
    return err("server", f"{name} reported an error mid-stream: {detail or err_type or 'unknown error'}", True)


def _base_url_env(provider: str) -> str:
    """The environment variable that sets `provider`'s base URL, for operators' messages."""
    spec = provider_spec(provider)
    return (spec and spec.base_url_env) or "the base URL"


def map_exception(exc: BaseException, *, provider: str, api_key: str | None, started: bool) -> ProviderError:
    """Classify any exception raised while calling a provider. `started`: the response had begun."""
    name = provider_label(provider)
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, STATUS_ERRORS):
        return from_status(
            provider=provider, status=exc.status_code, headers=exc.response.headers, body=exc.body, api_key=api_key
        )
    if isinstance(exc, TIMEOUT_ERRORS):
        where = "while streaming" if started else "before answering"
        return ProviderError(
            f"{name} stopped responding {where} (read timeout).", kind="timeout", retryable=True, provider=provider
        )
    if isinstance(exc, CONNECTION_ERRORS):
        if started:
            return ProviderError(
                f"The connection to {name} broke mid-reply.", kind="stream_broken", retryable=True, provider=provider
            )
        return ProviderError(
            f"Could not connect to {name}. Check the network and {_base_url_env(provider)}.",
            kind="connection",
            retryable=True,
            provider=provider,
        )
    if isinstance(exc, (anthropic.APIError, openai.APIError)):
        # An error event inside a stream without an HTTP status (OpenAI-compatible servers do this).
        err_type, _code, message = _error_info(getattr(exc, "body", None))
        if err_type in {"overloaded_error", "rate_limit_error"}:
            return from_status(provider=provider, status=200, headers=None, body=exc.body, api_key=api_key)
        return ProviderError(
            f"{name} reported an error: {_server_detail(message or str(exc), api_key) or 'unknown error'}",
            kind="server",
            retryable=True,
            provider=provider,
        )
    raise TypeError(f"not a provider exception: {type(exc).__name__}") from exc
