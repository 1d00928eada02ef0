"""The one small protocol every provider adapter speaks.

`stream(request)` yields `TextDelta`s (and `ReasoningDelta`s for thinking) as text arrives and ends
with exactly one `StreamEnd`, or raises `ProviderError`. Consumers that may stop iterating early should
wrap the stream in `contextlib.aclosing(...)` so the HTTP response is closed at once rather than when
garbage collected; cancelling the task that iterates it closes the response too.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

# Names shown to users and the environment variables that configure each provider.
PROVIDER_LABELS = {
    "anthropic": "Anthropic",
    "openai": "OpenAI",
    "gemini": "Google Gemini",
    "xai": "xAI",
    "compatible": "OpenAI-compatible server",
    "demo": "Demo (offline, not a language model)",
}
KEY_ENV_VARS = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "xai": "XAI_API_KEY",
    "compatible": "COMPATIBLE_API_KEY",
}
BASE_URL_ENV_VARS = {
    "anthropic": "ANTHROPIC_BASE_URL",
    "openai": "OPENAI_BASE_URL",
    "gemini": "GEMINI_BASE_URL",
    "xai": "XAI_BASE_URL",
    "compatible": "COMPATIBLE_BASE_URL",
}


@dataclass
class ModelRequest:
    provider: str
    model_id: str
    system: str  # the stable prefix (role prompt, rubric, references): sent so providers can cache it
    user: str  # the per-turn part (current document, feedback, instructions)
    max_tokens: int = 4096  # everything the reply may generate, thinking included
    temperature: float | None = 0.7
    # The catalogue's reasoning capability of the model ("", "thinking_budget", "effort"): adapters send
    # reasoning parameters only when it matches, and leave out the sampling settings such models refuse.
    reasoning: str = ""
    thinking_budget: int = 0  # Anthropic extended thinking, tokens; 0 = off (>= 1024 and < max_tokens)
    reasoning_effort: str = ""  # OpenAI reasoning models: "low" | "medium" | "high"; "" = model default
    metadata: dict[str, Any] = field(default_factory=dict)  # round, agent_name, session_id, role, criteria...


@dataclass
class Usage:
    """Token counts of one call, in the shape billing.pricing charges them.

    `input_tokens` are the prompt tokens NOT read from the cache (billed at the input price); this
    includes `cache_write_tokens`, the part of them written to the provider's cache (Anthropic).
    `cached_input_tokens` are the prompt tokens read from the cache (billed at the cached price).
    The whole prompt is `input_tokens + cached_input_tokens`.
    `estimated` is true when the provider reported no usage and it was estimated from the text.
    `reasoning_tokens` are the thinking / reasoning tokens, already INCLUDED in `output_tokens` (both
    APIs bill them as output): Anthropic's `usage.output_tokens_details.thinking_tokens`, OpenAI's
    `usage.completion_tokens_details.reasoning_tokens`; estimated from the thinking text when absent.
    """

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    estimated: bool = False
    reasoning_tokens: int = 0


@dataclass
class TextDelta:
    text: str


@dataclass
class ReasoningDelta:
    """A piece of the model's thinking (Anthropic `thinking_delta`, a compatible server's
    `reasoning_content`, `<think>` text): shown to the owner, never part of the reply's text."""

    text: str


@dataclass
class StreamEnd:
    usage: Usage
    # Normalized across providers: "end_turn", "max_tokens", "stop_sequence", "content_filter", or the
    # provider's own value when it has no equivalent.
    stop_reason: str


StreamEvent = TextDelta | ReasoningDelta | StreamEnd

ERROR_KINDS = frozenset(
    {
        "auth",
        "rate_limit",
        "overloaded",
        "server",
        "connection",
        "timeout",
        "bad_request",
        "stream_broken",
        "not_configured",
    }
)


class ProviderError(Exception):
    """A failed call, classified for the engine's single retry layer and worded for the user.

    `user_message` never contains an API key or the prompt.
    """

    def __init__(
        self,
        user_message: str,
        *,
        kind: str,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        provider: str = "",
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown provider error kind {kind!r}")
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.provider = provider

    def __repr__(self) -> str:
        return f"ProviderError(kind={self.kind!r}, retryable={self.retryable}, status={self.status})"


class ProviderAdapter(Protocol):
    provider: str

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...

    async def check(self) -> tuple[bool, str]: ...


class BaseAdapter:
    """Shared helpers; concrete adapters implement `stream` and `check`."""

    provider: str = ""
    label: ClassVar[str] = ""

    @property
    def display_name(self) -> str:
        return PROVIDER_LABELS.get(self.provider, self.provider)


def estimate_tokens(text: str) -> int:
    """About four characters per token: only for providers that report no usage."""
    return math.ceil(len(text) / 4) if text else 0


def redact(text: str, secret: str | None) -> str:
    """Remove a key from text that came back from a server (some echo the key they rejected)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text
