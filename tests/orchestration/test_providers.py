"""Provider adapters through the real SDKs against the wire-level fake server (tests/fakes/llm_server.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from orchestration.providers import (
    ModelRequest,
    ProviderError,
    StreamEnd,
    TextDelta,
    check_provider,
    clear_adapter_cache,
    get_adapter,
    provider_configured,
    retry_delay,
)
from tests.fakes.llm_server import ANTHROPIC_PATH, GENERATION_PATHS, OPENAI_PATH

SECRET_KEY = "sk-test-SECRET-0123456789"
# Long enough (about 1,170 tokens) for Anthropic to cache it: the minimum is 1,024 for most models.
SYSTEM = "You are the Editor. Rubric: Clarity (weight 2), Depth (weight 1). " * 70


@pytest.fixture(autouse=True)
def _fresh_adapters():
    clear_adapter_cache()
    yield
    clear_adapter_cache()


@pytest.fixture
def providers(settings, fake_llm):
    """Every provider pointed at the fake server, with a key the server accepts."""
    settings.PROVIDERS = fake_llm.provider_settings(api_key=SECRET_KEY)
    settings.PROVIDER_TIMEOUT_SECONDS = 5.0
    fake_llm.expected_api_key = SECRET_KEY
    return fake_llm


def make_request(provider: str, **overrides) -> ModelRequest:
    values = {
        "provider": provider,
        "model_id": "fake-model-1",
        "system": SYSTEM,
        "user": "Brief: Urban beekeeping\n\nWrite the first draft.",
        "max_tokens": 1000,
        "temperature": 0.3,
        "metadata": {"round": 1, "agent_name": "Editor", "session_id": 5, "role": "editor"},
    }
    values.update(overrides)
    return ModelRequest(**values)


async def collect(provider: str, request: ModelRequest | None = None, **adapter_kwargs):
    """(text, end, error): everything a consumer sees from one stream."""
    adapter = get_adapter(provider, **adapter_kwargs)
    text, end, error = [], None, None
    try:
        async for event in adapter.stream(request or make_request(provider)):
            if isinstance(event, TextDelta):
                assert end is None, "text after the end event"
                text.append(event.text)
            else:
                assert isinstance(event, StreamEnd)
                end = event
    except ProviderError as exc:
        error = exc
    return "".join(text), end, error


# --- streaming and usage ---------------------------------------------------------------------------


async def test_anthropic_streams_text_and_counts_cache_write_then_cache_read(providers):
    providers.reply("The hive needs shade. " * 5, "Second round text.")

    text, end, error = await collect("anthropic")
    assert error is None
    assert text == "The hive needs shade. " * 5
    assert end.stop_reason == "end_turn"
    system_tokens = -(-len(SYSTEM) // 4)
    assert end.usage.cache_write_tokens == system_tokens
    assert end.usage.cached_input_tokens == 0
    user_tokens = -(-len(make_request("anthropic").user) // 4)
    assert end.usage.input_tokens == system_tokens + user_tokens  # full price: includes the cache write
    assert end.usage.output_tokens == 28  # 110 characters in chunks of 4

    text, end, error = await collect("anthropic", make_request("anthropic", user="Round 2: revise."))
    assert text == "Second round text."
    assert end.usage.cached_input_tokens == system_tokens  # the stable prefix came from the cache
    assert end.usage.input_tokens == -(-len("Round 2: revise.") // 4)  # only the new part at full price
    assert end.usage.cache_write_tokens == 0


async def test_anthropic_request_marks_the_stable_prefix_cacheable_and_sends_the_key(providers):
    providers.reply("ok")
    await collect("anthropic")

    (sent,) = providers.generation_requests()
    assert sent.path == ANTHROPIC_PATH
    assert sent.api_key == SECRET_KEY  # this SDK generation sends it as a Bearer token
    assert sent.json["model"] == "fake-model-1"
    assert sent.json["stream"] is True
    assert sent.json["max_tokens"] == 1000
    assert sent.json["system"] == [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
    assert sent.json["messages"] == [{"role": "user", "content": "Brief: Urban beekeeping\n\nWrite the first draft."}]


async def test_anthropic_output_tokens_match_the_chunks_the_server_sent(providers):
    providers.chunk_size = 5
    providers.reply("abcdefghijklmnopqrstuvwxy")  # 25 characters = 5 chunks

    text, end, _ = await collect("anthropic")

    assert text == "abcdefghijklmnopqrstuvwxy"
    assert end.usage.output_tokens == 5


@pytest.mark.parametrize("provider", ["openai", "gemini", "xai"])
async def test_openai_style_providers_stream_text_and_report_cached_tokens(providers, provider):
    providers.reply("First answer.", "Second answer.")

    text, end, error = await collect(provider)
    assert (text, error) == ("First answer.", None)
    assert end.usage.cached_input_tokens == 0
    first_input = end.usage.input_tokens

    text, end, _ = await collect(provider)
    assert text == "Second answer."
    assert end.stop_reason == "stop"  # the provider's own word, classified as a normal end
    assert end.outcome == "normal"
    system_tokens = -(-len(SYSTEM) // 4)
    assert end.usage.cached_input_tokens == system_tokens
    assert end.usage.input_tokens == first_input - system_tokens  # uncached part only
    assert not end.usage.estimated

    sent = providers.generation_requests()[0]
    assert sent.path == OPENAI_PATH
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.json["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in sent.json["messages"]] == ["system", "user"]
    assert sent.json["messages"][0]["content"] == SYSTEM


async def test_compatible_server_needs_no_key(settings, fake_llm):
    settings.PROVIDERS = {"compatible": {"api_key": "", "base_url": fake_llm.openai_url}}
    fake_llm.reply("Local model says hi.")

    text, end, error = await collect("compatible")

    assert error is None
    assert text == "Local model says hi."
    assert end.usage.output_tokens > 0
    assert fake_llm.last_request.headers["authorization"] == "Bearer not-needed"
    assert fake_llm.last_request.json["max_tokens"] == 1000


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_reply_cut_at_max_tokens_reports_max_tokens(providers, provider):
    providers.reply("x" * 400)  # 100 chunks of 4 characters

    text, end, _ = await collect(provider, make_request(provider, max_tokens=10))

    assert text == "x" * 40
    assert end.stop_reason == {"anthropic": "max_tokens", "openai": "length"}[provider]
    assert end.outcome == "truncated"
    assert end.usage.output_tokens == 10


async def test_an_adapter_works_from_successive_event_loops(providers):
    """The engine runs each step in its own loop: a cached adapter must not reuse a dead loop's pool."""
    providers.reply("one", "two")

    def run_once():
        return asyncio.run(collect("openai"))[0]

    # Each call runs on a fresh loop in a worker thread (this test's own loop is already running).
    assert await asyncio.to_thread(run_once) == "one"
    assert await asyncio.to_thread(run_once) == "two"


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_rate_limit_is_retryable_and_carries_retry_after(providers, provider):
    providers.fail_next(429, retry_after=7)
    providers.reply("after the wait")

    _, end, error = await collect(provider)

    assert end is None
    assert error.kind == "rate_limit"
    assert error.retryable is True
    assert error.retry_after == 7
    assert error.status == 429
    # The scripted reply was kept for the retry.
    text, end, error = await collect(provider)
    assert (text, error) == ("after the wait", None)


async def test_exhausted_openai_quota_is_not_retried(providers):
    providers.fail_next(429, message="You exceeded your current quota.", code="insufficient_quota")

    _, _, error = await collect("openai")

    assert error.kind == "rate_limit"
    assert error.retryable is False  # waiting does not refill a quota
    assert "quota" in error.user_message and "operator" in error.user_message
    assert "OPENAI_API_KEY" not in error.user_message  # users never see a setting's name


@pytest.mark.parametrize(
    ("provider", "status", "kind"),
    [
        ("anthropic", 500, "server"),
        ("anthropic", 529, "overloaded"),
        ("openai", 500, "server"),
        ("openai", 503, "server"),
    ],
)
async def test_server_errors_and_overload_are_retryable(providers, provider, status, kind):
    providers.fail_next(status)

    _, end, error = await collect(provider)

    assert end is None
    assert (error.kind, error.retryable, error.status) == (kind, True, status)


@pytest.mark.parametrize(
    ("provider", "env_var"), [("anthropic", "ANTHROPIC_API_KEY"), ("openai", "OPENAI_API_KEY"), ("xai", "XAI_API_KEY")]
)
async def test_rejected_key_is_an_auth_error_for_the_operator_without_the_key_or_setting_name(
    providers, provider, env_var, caplog
):
    providers.expected_api_key = "the-right-key"

    _, end, error = await collect(provider)

    assert end is None
    assert error.kind == "auth"
    assert error.retryable is False
    assert env_var not in error.user_message  # users never see a setting's name...
    assert "operator" in error.user_message
    assert env_var in caplog.text  # ...the operator's log says which one to fix
    assert "401" in error.user_message
    assert SECRET_KEY not in error.user_message
    assert SECRET_KEY not in str(error) and SECRET_KEY not in repr(error)


async def test_unknown_model_is_a_bad_request_that_is_not_retried(providers):
    providers.fail_next(404, message=f"model fake-model-1 not found for key {SECRET_KEY}")

    _, _, error = await collect("openai")

    assert (error.kind, error.retryable) == ("bad_request", False)
    assert "not found" in error.user_message
    assert SECRET_KEY not in error.user_message  # a server echoing the key does not leak it


async def test_unreachable_server_is_a_retryable_connection_error(settings, fake_llm):
    port = fake_llm.port
    fake_llm.stop()
    settings.PROVIDERS = {"anthropic": {"api_key": SECRET_KEY, "base_url": f"http://127.0.0.1:{port}"}}

    _, _, error = await collect("anthropic")

    assert (error.kind, error.retryable) == ("connection", True)
    assert "ANTHROPIC_BASE_URL" in error.user_message


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_disconnect_mid_stream_yields_the_text_then_stream_broken(providers, provider):
    providers.reply("abcdefghijklmnopqrstuvwxyz")
    providers.disconnect_next(after_chunks=3)

    text, end, error = await collect(provider)

    assert text == "abcdefghijkl"  # the three chunks that arrived were delivered
    assert end is None
    assert (error.kind, error.retryable) == ("stream_broken", True)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_stream_without_an_ending_is_stream_broken(providers, provider):
    """A server that closes cleanly but never says the message is complete."""
    providers.reply("abcdefghijklmnop")
    providers.end_early_next(after_chunks=2)

    text, end, error = await collect(provider)

    assert text == "abcdefgh"
    assert end is None
    assert error.kind == "stream_broken"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_stalled_stream_times_out_and_frees_the_connection(providers, provider):
    providers.reply("abcdefghijklmnop")
    providers.stall_next(after_chunks=2)

    text, end, error = await collect(provider, timeout=1.0)

    assert text == "abcdefgh"
    assert end is None
    assert (error.kind, error.retryable) == ("timeout", True)
    assert await asyncio.to_thread(providers.client_disconnected.wait, 5)


async def test_server_slower_than_the_timeout_to_answer_is_a_timeout(providers):
    providers.latency = 2.0

    _, _, error = await collect("anthropic", timeout=1.0)

    assert (error.kind, error.retryable) == ("timeout", True)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_cancelling_a_stream_closes_the_http_response(providers, provider):
    providers.tokens_per_second = 5  # slow enough that the reply is still streaming when we cancel
    providers.reply("a long reply that keeps coming " * 10)
    first_chunk = asyncio.Event()
    received = []

    async def consume():
        async for event in get_adapter(provider).stream(make_request(provider)):
            if isinstance(event, TextDelta):
                received.append(event.text)
                first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert received
    # The server notices the closed socket on its next write, well before the reply would have ended.
    assert await asyncio.to_thread(providers.client_disconnected.wait, 5)


# --- configuration and checks --------------------------------------------------------------------------


def test_provider_configured_reports_what_is_missing(settings):
    settings.PROVIDERS = {
        "anthropic": {"api_key": "", "base_url": ""},
        "openai": {"api_key": "sk-x", "base_url": ""},
        "gemini": {"api_key": "", "base_url": "https://example.invalid/"},
        "xai": {"api_key": "", "base_url": ""},
        "compatible": {"api_key": "", "base_url": ""},
    }

    assert provider_configured("demo")[0] is True
    assert provider_configured("openai")[0] is True
    ok, reason = provider_configured("anthropic")
    assert not ok and "ANTHROPIC_API_KEY" in reason
    ok, reason = provider_configured("gemini")
    assert not ok and "GEMINI_API_KEY" in reason
    ok, reason = provider_configured("compatible")
    assert not ok and "COMPATIBLE_BASE_URL" in reason
    assert provider_configured("nonsense")[0] is False

    settings.PROVIDERS["compatible"]["base_url"] = "http://127.0.0.1:11434/v1"
    assert provider_configured("compatible")[0] is True  # no key needed


def test_unconfigured_provider_cannot_be_called(settings):
    settings.PROVIDERS = {"anthropic": {"api_key": "", "base_url": ""}}

    with pytest.raises(ProviderError) as caught:
        get_adapter("anthropic")

    assert caught.value.kind == "not_configured"
    assert caught.value.retryable is False
    assert "not connected on this server" in caught.value.user_message
    assert "ANTHROPIC_API_KEY" not in caught.value.user_message


def test_adapters_are_cached_per_configuration(settings, fake_llm):
    settings.PROVIDERS = fake_llm.provider_settings(api_key="key-one")
    first = get_adapter("anthropic")
    assert get_adapter("anthropic") is first

    settings.PROVIDERS = fake_llm.provider_settings(api_key="key-two")
    assert get_adapter("anthropic") is not first
    assert "key-two" not in repr(get_adapter("anthropic"))


@pytest.mark.parametrize("provider", ["anthropic", "openai", "compatible"])
async def test_check_provider_lists_models_without_spending_tokens(providers, provider):
    if provider == "compatible":
        providers.expected_api_key = None  # a local server without a key
    ok, message = await check_provider(provider)

    assert ok, message
    assert "reachable" in message
    assert [r.path for r in providers.requests] == ["/v1/models"]
    assert not any(r.path in GENERATION_PATHS for r in providers.requests)


async def test_check_provider_reports_a_rejected_key(providers):
    providers.expected_api_key = "another-key"

    ok, message = await check_provider("anthropic")

    assert not ok
    assert "ANTHROPIC_API_KEY" in message
    assert SECRET_KEY not in message
    assert providers.generation_requests() == []


async def test_check_provider_reports_missing_configuration(settings):
    settings.PROVIDERS = {"openai": {"api_key": "", "base_url": ""}}

    assert await check_provider("openai") == (False, "OpenAI is not configured. Set OPENAI_API_KEY.")
    assert (await check_provider("demo"))[0] is True


# --- retry delay --------------------------------------------------------------------------------------


def test_retry_delay_grows_is_capped_and_honours_retry_after():
    rng = random.Random(1)
    delays = [retry_delay(attempt, None, rng=rng) for attempt in range(0, 8)]

    assert 0.5 <= delays[0] <= 1.0
    # Each wait is drawn from [ceiling/2, ceiling] with the ceiling doubling: no two first waits are equal.
    for attempt, delay in enumerate(delays[:5]):
        assert 2**attempt / 2 <= delay <= 2**attempt
    assert max(delays) <= 30.0
    assert retry_delay(1, 12.0, rng=rng) >= 12.0  # the server asked for longer than our backoff
    assert retry_delay(1, 10_000.0, rng=rng) <= 120.0  # but not forever


# --- issue 8: a prompt too long, in each provider's own words ---------------------------------------------------


@pytest.mark.parametrize(
    "provider, status, body, counts",
    [
        (
            "anthropic",
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 208310 tokens > 200000 maximum",
                },
            },
            (208_310, 200_000),
        ),
        (
            "anthropic",
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, "
                    "decrease input length or `max_tokens` and try again",
                },
            },
            (188_240, 200_000),
        ),
        (
            "openai",
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 128000 tokens. However, your messages "
                    "resulted in 130012 tokens. Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            (130_012, 128_000),
        ),
        (
            "openai",
            400,
            {
                "error": {
                    "message": "Your input exceeds the context window of this model. "
                    "Please adjust your input and try again.",
                    "type": "invalid_request_error",
                    "param": "input",
                    "code": "context_length_exceeded",
                }
            },
            (None, None),
        ),
    ],
)
def test_a_prompt_too_long_is_its_own_kind_with_the_providers_numbers(provider, status, body, counts):
    from orchestration.providers.errors import from_status

    error = from_status(provider=provider, status=status, headers=None, body=body, api_key="sk-secret")

    assert error.kind == "context_length" and error.retryable is False
    assert (error.prompt_tokens, error.limit_tokens) == counts
    assert "too long" in error.user_message


def test_other_400s_stay_bad_requests():
    from orchestration.providers.errors import from_status

    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: must be positive"}}
    error = from_status(provider="anthropic", status=400, headers=None, body=body, api_key=None)
    assert error.kind == "bad_request" and "max_tokens: must be positive" in error.user_message
