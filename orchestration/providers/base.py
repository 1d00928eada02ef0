"""The one small protocol every provider adapter speaks.

`stream(request)` yields `TextDelta`s (and `ReasoningDelta`s for thinking) as text arrives and ends
with exactly one `StreamEnd`, or raises `ProviderError`. Consumers that may stop iterating early should
wrap the stream in `contextlib.aclosing(...)` so the HTTP response is closed at once rather than when
garbage collected; cancelling the task that iterates it closes the response too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

# Re-exported for the engine's failure messages; everything else asks the provider table itself.
from orchestration.provider_table import PROVIDER_LABELS as PROVIDER_LABELS
from orchestration.provider_table import provider_label

# Re-exported: the adapters (and tests) reach the one estimate through this module.
from orchestration.tokens import estimate_tokens as estimate_tokens


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
    # Multi-turn requests (conversations). When set, adapters send these instead of one `user` message, and
    # `user` holds their text only for estimates. Neutral shape, converted per API by the adapters:
    #   {"role": "user" | "assistant", "content": str}
    #   {"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments": dict}]}
    #   {"role": "tool", "tool_call_id": str, "name": str, "content": str}
    messages: list[dict[str, Any]] | None = None
    # Tools the model may call: [{"name", "description", "parameters": JSON schema object}]. Adapters send
    # them in the API's shape (Anthropic `tools` with input_schema; OpenAI `tools` of type function).
    tools: list[dict[str, Any]] = field(default_factory=list)


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
class ToolCall:
    """A tool the model asked to call, yielded once complete, before StreamEnd (stop reason "tool_use" /
    "tool_calls"). `arguments` is the parsed JSON object ({} when the model sent invalid JSON; then
    `raw` holds what it sent and `invalid` is true)."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw: str = ""
    invalid: bool = False


def parse_tool_arguments(raw: str) -> tuple[dict[str, Any], bool]:
    """(arguments, invalid): a tool call's JSON arguments; an empty string is {} (a tool without inputs)."""
    import json

    if not raw.strip():
        return {}, False
    try:
        value = json.loads(raw)
    except ValueError:
        return {}, True
    return (value, False) if isinstance(value, dict) else ({}, True)


@dataclass
class StreamEnd:
    """How a reply ended. See docs/providers.md for every stop reason of both APIs.

    `stop_reason` is the provider's own value ("end_turn", "max_tokens", "refusal", "stop", "length",
    "content_filter", ...; "refusal" also when an OpenAI stream carried `delta.refusal` text).
    `stop_detail` is the provider's words about an abnormal end (Anthropic's refusal explanation, OpenAI's
    refusal text), empty when it gave none. `outcome` classifies it: see `stop_outcome`.
    """

    usage: Usage
    stop_reason: str
    stop_detail: str = ""

    @property
    def outcome(self) -> str:
        return stop_outcome(self.stop_reason)


# What Atelier does with each stop reason (docs/providers.md has the table).
NORMAL_STOPS = frozenset({"end_turn", "stop_sequence", "stop"})
# The reply is not finished: the output limit, the context window, or the model paused for a tool we never
# offered. The text is a fragment and must not replace the document.
TRUNCATED_STOPS = frozenset(
    {"max_tokens", "length", "model_context_window_exceeded", "pause_turn", "tool_use", "tool_calls", "function_call"}
)
REFUSED_STOPS = frozenset({"refusal", "content_filter"})


def stop_outcome(stop_reason: str) -> str:
    """ "normal", "truncated" or "refused". An unknown stop reason is never treated as a normal end."""
    if stop_reason in NORMAL_STOPS:
        return "normal"
    if stop_reason in REFUSED_STOPS:
        return "refused"
    return "truncated"


StreamEvent = TextDelta | ReasoningDelta | ToolCall | StreamEnd

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
        "context_length",
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
        usage: Usage | None = None,
        prompt_tokens: int | None = None,
        limit_tokens: int | None = None,
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
        # What the provider reported before the failure (Anthropic's message_start input count): charged as is.
        self.usage = usage
        # kind="context_length": the provider's own count of the prompt and its context window, in tokens.
        self.prompt_tokens = prompt_tokens
        self.limit_tokens = limit_tokens

    def __repr__(self) -> str:
        return f"ProviderError(kind={self.kind!r}, retryable={self.retryable}, status={self.status})"


class BaseAdapter:
    """What every provider adapter offers (`stream`, `check`) plus shared helpers."""

    provider: str = ""

    @property
    def display_name(self) -> str:
        return provider_label(self.provider)

    def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        """The reply as it arrives: TextDelta / ReasoningDelta events, then exactly one StreamEnd
        (stop reason and usage). Raises ProviderError. An async generator: callers may ``aclose()`` it."""
        raise NotImplementedError

    async def check(self) -> tuple[bool, str]:
        """(ok, message): whether the provider answers with this configuration, spending no tokens."""
        raise NotImplementedError


class SurrogateJoiner:
    """Rejoin UTF-16 surrogate pairs that a gateway split across two deltas ("\\ud83c" | "\\udf33").

    JSON escapes let a server send half of an emoji per chunk; Python then holds lone surrogates, which
    no database or UTF-8 encoder accepts. A trailing high surrogate is held back until the next delta;
    pairs are joined into their character; a surrogate that never finds its partner becomes U+FFFD.
    """

    def __init__(self) -> None:
        self.pending = ""

    def feed(self, text: str) -> str:
        text = self.pending + text
        self.pending = ""
        if text and "\ud800" <= text[-1] <= "\udbff":
            text, self.pending = text[:-1], text[-1]
        return _join_surrogates(text)

    def flush(self) -> str:
        text, self.pending = self.pending, ""
        return _join_surrogates(text)


def _join_surrogates(text: str) -> str:
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def redact(text: str, secret: str | None) -> str:
    """Remove a key from text that came back from a server (some echo the key they rejected)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text
