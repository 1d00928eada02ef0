"""Adapters over the official SDKs: Anthropic Messages and OpenAI Chat Completions (and compatibles)."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import anthropic
import httpx2
import openai

from orchestration.provider_table import provider_spec
from orchestration.provider_table import sends_temperature as table_sends_temperature
from orchestration.providers.asyncio_backend import AsyncioBackend
from orchestration.providers.base import (
    BaseAdapter,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    SurrogateJoiner,
    TextDelta,
    ToolCall,
    Usage,
    estimate_tokens,
    parse_tool_arguments,
)
from orchestration.providers.errors import SDK_ERRORS, map_exception
from orchestration.providers.think import ThinkTagSplitter

# The check call lists models: it must be quick even when the generation timeout is long.
CHECK_TIMEOUT_SECONDS = 15.0
# OpenAI reasoning models reject max_tokens and a non-default temperature.
OPENAI_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
# Anthropic: budget_tokens must be >= 1024 and below max_tokens (anthropic.types.ThinkingConfigEnabledParam).
MIN_THINKING_BUDGET = 1024
# The SDK clients read on the loop's own transports (providers/asyncio_backend.py), not through anyio: less
# event-loop CPU per streamed chunk (issue 15). False: httpcore2's default (anyio) backend.
ASYNCIO_NETWORK_BACKEND = True
REDACTED_THINKING_NOTE = "\n[Part of the reasoning was redacted by the provider for safety.]\n"

# Anthropic caches a prefix only from this many tokens on; a shorter prefix marked cache_control is simply
# not cached. Source: Anthropic's prompt-caching docs ("Cache limitations"), late 2026. First match wins.
ANTHROPIC_MIN_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude-haiku-3", 2048),
)
DEFAULT_MIN_CACHEABLE_TOKENS = 1024  # Sonnet 4.5 / 4 / 3.7, Opus 4.1 / 4, and models we do not know


def min_cacheable_tokens(model_id: str) -> int:
    """The shortest prefix (tokens) Anthropic caches for this model."""
    for prefix, tokens in ANTHROPIC_MIN_CACHEABLE_TOKENS:
        if model_id.startswith(prefix):
            return tokens
    return DEFAULT_MIN_CACHEABLE_TOKENS


def sends_temperature(provider: str, model_id: str) -> bool:
    """Whether an agent's temperature reaches this model (shown per model in the builder).

    Not for Anthropic (this SDK generation dropped sampling parameters from the Messages API) nor for OpenAI's
    reasoning models (gpt-5, o-series reject a non-default temperature); every other OpenAI-style model gets it.
    The demo provider is not a language model and ignores it.
    """
    return table_sends_temperature(provider, model_id, reasoning_prefixes=OPENAI_REASONING_PREFIXES)


def _unless_impossible(result: Usage, request: ModelRequest, output_chars: int) -> Usage:
    """`result` as reported, or (a gateway that reports zeros for text it streamed) with the output, and the
    input when none was reported either, estimated from the text and marked estimated. Changes `result`."""
    if _impossible_usage(result.output_tokens, output_chars):
        result.output_tokens = estimate_tokens("x" * output_chars)
        if result.input_tokens + result.cached_input_tokens <= 0:
            result.input_tokens = estimate_tokens(request.system) + estimate_tokens(request.user)
        result.estimated = True
    return result


def _impossible_usage(output_tokens: int, text_chars: int) -> bool:
    """No output tokens for a non-empty reply: a server that reports zeros (vLLM-style), not a free reply."""
    return text_chars > 0 and output_tokens <= 0


def http_timeout(seconds: float) -> httpx2.Timeout:
    # `read` bounds the gap between two chunks, so a stalled stream fails after `seconds`
    # instead of hanging; connecting should never take long.
    return httpx2.Timeout(seconds, connect=min(seconds, 10.0))


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The process's one TLS context for provider clients (the default one: system / certifi CAs, SSL_CERT_FILE).

    Building it loads the CA bundle, several milliseconds of CPU; every SDK client (one per event loop, so one
    per drive) built its own (issue 15). An SSLContext is safe to share between clients, threads and loops."""
    return httpx2.create_ssl_context()


def sdk_http_client(sdk: Any, seconds: float) -> httpx2.AsyncClient:
    """`sdk`'s (the anthropic or openai module's) default async HTTP client, with its connection limits and
    redirects, on the shared TLS context; `seconds` as http_timeout."""
    client: httpx2.AsyncClient = sdk.DefaultAsyncHttpxClient(verify=shared_ssl_context(), timeout=http_timeout(seconds))
    if ASYNCIO_NETWORK_BACKEND:
        on_asyncio_backend(client)
    return client


def on_asyncio_backend(client: httpx2.AsyncClient) -> httpx2.AsyncClient:
    """`client` (not used yet) reading through providers/asyncio_backend.AsyncioBackend; returns it.

    httpx2 takes no network backend, its connection pool (httpcore2.AsyncConnectionPool) does: set there.
    Raises AttributeError if httpx2's transport no longer has that pool (an upgrade: the tests notice)."""
    client._transport._pool._network_backend = AsyncioBackend()  # type: ignore[attr-defined]
    return client


class SDKAdapter(BaseAdapter):
    """One SDK client per event loop: httpx2 connection pools must not cross loops
    (each django-q2 step and each pytest-asyncio test runs its own loop)."""

    def __init__(self, *, provider: str, api_key: str | None, base_url: str | None, timeout: float) -> None:
        self.provider = provider
        self.api_key = api_key or None
        self.base_url = base_url or None
        self.timeout = timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} provider={self.provider} base_url={self.base_url} timeout={self.timeout}>"

    def _make_client(self) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._make_client()
        return client

    def _error(self, exc: BaseException, *, started: bool) -> ProviderError:
        return map_exception(exc, provider=self.provider, api_key=self.api_key, started=started)

    def _broken(self) -> ProviderError:
        return ProviderError(
            f"The reply from {self.display_name} ended before it was complete.",
            kind="stream_broken",
            retryable=True,
            provider=self.provider,
        )

    async def check(self) -> tuple[bool, str]:
        """List models: proves the URL and key work without spending tokens."""
        try:
            page = await self.client.with_options(
                timeout=http_timeout(min(self.timeout, CHECK_TIMEOUT_SECONDS))
            ).models.list()
        except (*SDK_ERRORS, httpx2.HTTPError) as exc:
            return False, self._error(exc, started=False).user_message
        count = len(getattr(page, "data", None) or [])
        return True, f"{self.display_name} is reachable ({count} model{'s' if count != 1 else ''} listed)."


class _AnthropicReader:
    """Turns the Messages API's stream events into Atelier's, keeping what the end of the call needs:
    the usage counts (`reported` once message_start gave the input), the stop reason and the characters
    streamed (text and thinking, for a gateway that reports zeros)."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0, "thinking": None}
        self.reported = False  # message_start arrived: the input counts are the provider's
        self.stop_reason = ""
        self.stop_detail = ""
        self.finished = False
        self.joiner = SurrogateJoiner()
        self.text_chars = 0
        self.thinking_chars = 0
        self.tool_blocks: dict[int, dict[str, Any]] = {}  # content block index -> {"id", "name", "json": [pieces]}

    def read(self, event: Any) -> list[StreamEvent]:
        """What one SDK stream event yields (often nothing: usage and stop events only update the state)."""
        kind = event.type
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "redacted_thinking":
                return [ReasoningDelta(REDACTED_THINKING_NOTE)]
            if block.type == "tool_use":
                self.tool_blocks[event.index] = {"id": block.id, "name": block.name, "json": []}
        elif kind == "content_block_stop" and event.index in self.tool_blocks:
            block = self.tool_blocks.pop(event.index)
            raw = "".join(block["json"])
            arguments, invalid = parse_tool_arguments(raw)
            return [ToolCall(id=block["id"], name=block["name"], arguments=arguments, raw=raw, invalid=invalid)]
        elif kind == "message_start":
            _merge_anthropic_usage(self.usage, event.message.usage)
            self.reported = True
        elif kind == "message_delta":
            _merge_anthropic_usage(self.usage, event.usage)
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            details = getattr(event.delta, "stop_details", None)
            if details is not None:
                self.stop_detail = _refusal_words(details) or self.stop_detail
        elif kind == "message_stop":
            self.finished = True
        return []

    def _delta(self, event: Any) -> list[StreamEvent]:
        """A content_block_delta: text, a piece of a tool call's JSON, or thinking."""
        delta_type = event.delta.type
        if delta_type == "text_delta" and event.delta.text:
            text = self.joiner.feed(event.delta.text)
            if text:
                self.text_chars += len(text)
                return [TextDelta(text)]
        elif delta_type == "input_json_delta" and event.index in self.tool_blocks:
            self.tool_blocks[event.index]["json"].append(event.delta.partial_json or "")
        elif delta_type == "thinking_delta" and event.delta.thinking:
            self.thinking_chars += len(event.delta.thinking)
            return [ReasoningDelta(event.delta.thinking)]
        # signature_delta: only needed to send thinking back in a multi-turn
        # conversation; every Atelier turn is a fresh single message.
        return []


class AnthropicAdapter(SDKAdapter):
    def _make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.base_url,
            max_retries=0,  # the engine owns the one retry layer
            timeout=http_timeout(self.timeout),
            http_client=sdk_http_client(anthropic, self.timeout),
        )

    @staticmethod
    def _params(request: ModelRequest) -> dict[str, Any]:
        """The Messages API arguments for `request` (streamed; the system prompt marked cacheable when long
        enough; thinking on when the request has a usable budget)."""
        params: dict[str, Any] = {
            "model": request.model_id,
            "max_tokens": request.max_tokens,
            "messages": (
                anthropic_messages(request.messages)
                if request.messages is not None
                else [{"role": "user", "content": request.user}]
            ),
            "stream": True,
        }
        if request.tools:
            params["tools"] = [
                {"name": t["name"], "description": t.get("description", ""), "input_schema": t["parameters"]}
                for t in request.tools
            ]
        if request.system:
            system_block: dict[str, Any] = {"type": "text", "text": request.system}
            # The stable prefix is marked cacheable when it is long enough to be cached at all: later rounds
            # then read it at a tenth of the price. Below the model's minimum the mark would do nothing.
            if estimate_tokens(request.system) >= min_cacheable_tokens(request.model_id):
                system_block["cache_control"] = {"type": "ephemeral"}
            params["system"] = [system_block]
        # No temperature: this SDK generation (anthropic 2.x) has dropped sampling parameters from the
        # Messages API, and sending one through extra_body risks a 400 from current models. (With
        # thinking on, the API refuses temperature and top_k outright.)
        if (
            request.reasoning == "thinking_budget"
            and request.thinking_budget >= MIN_THINKING_BUDGET
            and request.thinking_budget < request.max_tokens
        ):
            params["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
        return params

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        params = self._params(request)
        started = False
        reader = _AnthropicReader()
        try:
            stream = await self.client.messages.create(**params)
            started = True
            async with stream:  # closes the response on cancel, error or early exit
                async for event in stream:
                    for out in reader.read(event):
                        yield out
        except (*SDK_ERRORS, httpx2.HTTPError) as exc:
            error = self._error(exc, started=started)
            if reader.reported and error.usage is None:
                error.usage = self._usage(reader.usage, estimated=False)
            raise error from exc
        if not reader.finished:
            error = self._broken()
            if reader.reported:
                error.usage = self._usage(reader.usage, estimated=False)
            raise error
        tail = reader.joiner.flush()
        if tail:
            reader.text_chars += len(tail)
            yield TextDelta(tail)
        output_chars = reader.text_chars + reader.thinking_chars
        result = self._usage(reader.usage, estimated=False, thinking_chars=reader.thinking_chars)
        result = _unless_impossible(result, request, output_chars)
        yield StreamEnd(usage=result, stop_reason=reader.stop_reason or "end_turn", stop_detail=reader.stop_detail)

    @staticmethod
    def _usage(usage: dict[str, Any], *, estimated: bool, thinking_chars: int = 0) -> Usage:
        return Usage(
            # Anthropic's input_tokens excludes cache reads and writes; ours (billing's "uncached
            # input") includes the writes, which are charged at least at the input price.
            input_tokens=usage["input"] + usage["cache_write"],
            output_tokens=usage["output"],
            cached_input_tokens=usage["cache_read"],
            cache_write_tokens=usage["cache_write"],
            reasoning_tokens=_reasoning_tokens(usage["thinking"], thinking_chars, usage["output"]),
            estimated=estimated,
        )


def _refusal_words(details: Any) -> str:
    """Anthropic's stop_details: its explanation, else its category, in the provider's words."""
    explanation = (getattr(details, "explanation", None) or "").strip()
    category = (getattr(details, "category", None) or "").strip()
    if explanation and category:
        return f"{explanation} (category: {category})"
    return explanation or (f"category: {category}" if category else "")


def _merge_anthropic_usage(totals: dict[str, int | None], usage: Any) -> None:
    """message_start carries input counts, message_delta the cumulative output (and sometimes input) counts."""
    if usage is None:
        return
    for key, attr in (
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("cache_read", "cache_read_input_tokens"),
        ("cache_write", "cache_creation_input_tokens"),
    ):
        value = getattr(usage, attr, None)
        if value is not None:
            totals[key] = value
    details = getattr(usage, "output_tokens_details", None)
    if details is not None and getattr(details, "thinking_tokens", None) is not None:
        totals["thinking"] = details.thinking_tokens


def _reasoning_tokens(reported: int | None, thinking_chars: int, output_tokens: int) -> int:
    """The provider's count of thinking tokens, or an estimate from the thinking text; never above output."""
    # A server that counts no reasoning while we saw its text (a <think> block sent as content) did not
    # count it apart: estimate it from the text.
    if reported is None or (reported == 0 and thinking_chars):
        reported = estimate_tokens("x" * thinking_chars)
    return max(0, min(reported, output_tokens))


class OpenAIAdapter(SDKAdapter):
    """OpenAI, and every OpenAI-compatible endpoint by base URL (Gemini, xAI, Ollama, vLLM, llama.cpp)."""

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            # Local servers (Ollama, llama.cpp) need no key, but the SDK insists on one.
            api_key=self.api_key or "not-needed",
            base_url=self.base_url,
            max_retries=0,  # the engine owns the one retry layer
            timeout=http_timeout(self.timeout),
            http_client=sdk_http_client(openai, self.timeout),
        )

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = []
        if request.system:
            # First and identical every round, so providers with automatic prefix caching hit it.
            messages.append({"role": "system", "content": request.system})
        if request.messages is not None:
            messages.extend(openai_messages(request.messages))
        else:
            messages.append({"role": "user", "content": request.user})
        params: dict[str, Any] = {
            "model": request.model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        serves_openai_reasoning = bool((spec := provider_spec(self.provider)) and spec.openai_reasoning_models)
        reasoning = request.reasoning == "effort" or (
            serves_openai_reasoning and request.model_id.startswith(OPENAI_REASONING_PREFIXES)
        )
        if serves_openai_reasoning:
            params["max_completion_tokens"] = request.max_tokens
        else:
            params["max_tokens"] = request.max_tokens  # what compatible servers understand
        if request.temperature is not None and not reasoning:
            params["temperature"] = request.temperature
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t["name"],
                        "description": t.get("description", ""),
                        "parameters": t["parameters"],
                    },
                }
                for t in request.tools
            ]
        if request.reasoning == "effort" and request.reasoning_effort:
            # Only for models the catalogue marks as reasoning models: others answer 400.
            params["reasoning_effort"] = request.reasoning_effort
        return params

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        started = False
        reader = _ChatReader()
        try:
            stream = await self.client.chat.completions.create(**self._params(request))
            started = True
            async with stream:
                async for chunk in stream:
                    for out in reader.read(chunk):
                        yield out
        except (*SDK_ERRORS, httpx2.HTTPError) as exc:
            raise self._error(exc, started=started) from exc
        if not reader.finish_reason:
            raise self._broken()
        for out in reader.flush():
            yield out
        refusal_text = SurrogateJoiner().feed("".join(reader.refusal)).strip()
        output_chars = reader.text_chars + len(refusal_text)
        result = _chat_usage(reader.usage, request, output_chars=output_chars, reasoning_chars=reader.reasoning_chars)
        finish_reason = reader.finish_reason
        if refusal_text and finish_reason not in ("content_filter",):
            finish_reason = "refusal"
        yield StreamEnd(usage=result, stop_reason=finish_reason, stop_detail=refusal_text)


class _ChatReader:
    """Turns Chat Completions chunks into Atelier's stream events, keeping what the end of the call needs:
    the finish reason, the reported usage (None until a chunk carries it), a refusal's words, the tool
    calls' pieces and the characters streamed (text and reasoning, for a server that reports zeros)."""

    def __init__(self) -> None:
        self.finish_reason = ""
        self.usage: Any = None
        self.text_chars = 0
        self.reasoning_chars = 0
        self.joiner = SurrogateJoiner()
        self.splitter = ThinkTagSplitter()  # a leading <think> block streams as reasoning
        self.refusal: list[str] = []
        self.tool_parts: dict[int, dict[str, Any]] = {}  # delta.tool_calls[].index -> {"id", "name", "args": [...]}

    def read(self, chunk: Any) -> list[StreamEvent]:
        """What one chunk yields: reasoning and text deltas (tool calls come whole, at `flush`)."""
        out: list[StreamEvent] = []
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            content = delta.content if delta is not None else None
            # DeepSeek, vLLM's reasoning parsers and others stream the thinking in an
            # extra delta field; OpenAI's Chat Completions return none of it.
            thought = _delta_reasoning(delta)
            if thought:
                self.reasoning_chars += len(thought)
                out.append(ReasoningDelta(thought))
            if content:
                out += self._pieces(self.splitter.feed(self.joiner.feed(content)))
            for piece in (getattr(delta, "tool_calls", None) or []) if delta is not None else []:
                _collect_tool_call(self.tool_parts, piece)
            # A refusal comes as its own text, never as content: keep the provider's words.
            words = getattr(delta, "refusal", None) if delta is not None else None
            if words:
                self.refusal.append(words)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return out

    def flush(self) -> list[StreamEvent]:
        """At the end of the stream: the text still held back, then each tool call, in index order."""
        out = self._pieces([*self.splitter.feed(self.joiner.flush()), *self.splitter.flush()])
        for index in sorted(self.tool_parts):
            part = self.tool_parts[index]
            raw = "".join(part["args"])
            arguments, invalid = parse_tool_arguments(raw)
            out.append(
                ToolCall(
                    id=part["id"] or f"call_{index}", name=part["name"], arguments=arguments, raw=raw, invalid=invalid
                )
            )
        return out

    def _pieces(self, pieces: list[tuple[str, str]]) -> list[StreamEvent]:
        """The splitter's (kind, text) pieces as reasoning or text deltas, counted."""
        out: list[StreamEvent] = []
        for kind, piece in pieces:
            if kind == "reasoning":
                self.reasoning_chars += len(piece)
                out.append(ReasoningDelta(piece))
            else:
                self.text_chars += len(piece)
                out.append(TextDelta(piece))
        return out


def _chat_usage(usage: Any, request: ModelRequest, *, output_chars: int, reasoning_chars: int) -> Usage:
    """Usage from a Chat Completions usage object (None when the server sent none: then all estimated).

    Counts it reports as zero despite streamed text are estimated too, and the result says so.
    """
    if usage is None:
        # Some compatible servers ignore include_usage: estimate rather than bill nothing.
        reasoning_estimate = estimate_tokens("x" * reasoning_chars)
        return Usage(
            input_tokens=estimate_tokens(request.system) + estimate_tokens(request.user),
            output_tokens=max(1, estimate_tokens("x" * output_chars)) + reasoning_estimate,
            estimated=True,
            reasoning_tokens=reasoning_estimate,
        )
    details = getattr(usage, "prompt_tokens_details", None)
    cached = min((getattr(details, "cached_tokens", None) or 0) if details else 0, usage.prompt_tokens or 0)
    completion = getattr(usage, "completion_tokens_details", None)
    reported_reasoning = getattr(completion, "reasoning_tokens", None) if completion else None
    result = Usage(
        # OpenAI's prompt_tokens includes the cached ones; ours is the uncached part.
        input_tokens=(usage.prompt_tokens or 0) - cached,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=cached,
        # completion_tokens already includes the reasoning tokens (billed as output).
        reasoning_tokens=_reasoning_tokens(reported_reasoning, reasoning_chars, usage.completion_tokens or 0),
    )
    if _impossible_usage(result.output_tokens, output_chars + reasoning_chars):
        # A vLLM-style server that reports zeros: estimate what it did not count, and say so.
        result.reasoning_tokens = estimate_tokens("x" * reasoning_chars)
        result.output_tokens = estimate_tokens("x" * output_chars) + result.reasoning_tokens
        if result.input_tokens + cached <= 0:
            result.input_tokens = estimate_tokens(request.system) + estimate_tokens(request.user)
        result.estimated = True
    return result


def _delta_reasoning(delta: Any) -> str:
    """Reasoning text in a chunk's delta under the names compatible servers use (extra fields)."""
    if delta is None:
        return ""
    # The SDK keeps the fields it does not declare in model_extra: a dict lookup, where getattr on a missing
    # attribute goes through pydantic's __getattr__ and raises AttributeError, for every chunk.
    extra = getattr(delta, "model_extra", None)
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name) if isinstance(extra, dict) else getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _collect_tool_call(parts: dict[int, dict[str, Any]], piece: Any) -> None:
    """One `delta.tool_calls[i]` piece: the first carries the id and the function name, the rest pieces of
    the JSON arguments (OpenAI Chat Completions streaming)."""
    index = getattr(piece, "index", None) or 0
    part = parts.setdefault(index, {"id": "", "name": "", "args": []})
    if getattr(piece, "id", None):
        part["id"] = piece.id
    function = getattr(piece, "function", None)
    if function is not None:
        if getattr(function, "name", None):
            part["name"] += function.name
        if getattr(function, "arguments", None):
            part["args"].append(function.arguments)


def anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral multi-turn messages (ModelRequest.messages) as Anthropic Messages content blocks.

    Consecutive entries of one role merge into one message (the API wants user / assistant turns);
    tool results become `tool_result` blocks of the next user message, before any text in it.
    """
    out: list[dict[str, Any]] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].append(block)
        else:
            out.append({"role": role, "content": [block]})

    for message in messages:
        role = message["role"]
        if role == "tool":
            add("user", {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]})
        elif role == "assistant":
            if message.get("content"):
                add("assistant", {"type": "text", "text": message["content"]})
            for call in message.get("tool_calls") or []:
                add(
                    "assistant",
                    {"type": "tool_use", "id": call["id"], "name": call["name"], "input": call["arguments"]},
                )
        else:
            add("user", {"type": "text", "text": message.get("content") or "(empty)"})
    return out


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral multi-turn messages as Chat Completions messages (assistant `tool_calls`, role "tool")."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "tool":
            out.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]})
        elif role == "assistant" and message.get("tool_calls"):
            out.append(
                {
                    "role": "assistant",
                    "content": message.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        else:
            out.append({"role": role, "content": message.get("content") or ""})
    return out
