"""The fake LLM server speaks both wire protocols well enough for the official SDKs (non-streaming too)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import anthropic
import openai
import pytest


async def test_anthropic_sdk_reads_a_non_streaming_message(fake_llm):
    fake_llm.reply(lambda request: f"echo: {request.user_text}")
    client = anthropic.AsyncAnthropic(api_key="k", base_url=fake_llm.url, max_retries=0)

    message = await client.messages.create(
        model="fake-claude", max_tokens=100, messages=[{"role": "user", "content": "hello there"}]
    )

    assert message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3  # "hello there" is 11 characters
    assert message.usage.output_tokens == 5  # "echo: hello there" in chunks of 4


async def test_openai_sdk_reads_a_non_streaming_completion_with_cached_tokens(fake_llm):
    fake_llm.reply("first", "second")
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_llm.openai_url, max_retries=0)
    messages = [{"role": "system", "content": "S" * 400}, {"role": "user", "content": "go"}]

    first = await client.chat.completions.create(model="fake-gpt", messages=messages)
    second = await client.chat.completions.create(model="fake-gpt", messages=messages)

    assert first.choices[0].message.content == "first"
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens == 101
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 100


async def test_models_are_listed_in_each_api_shape(fake_llm):
    claude = anthropic.AsyncAnthropic(api_key="k", base_url=fake_llm.url, max_retries=0)
    gpt = openai.AsyncOpenAI(api_key="k", base_url=fake_llm.openai_url, max_retries=0)

    anthropic_ids = [m.id async for m in claude.models.list()]
    openai_ids = [m.id async for m in gpt.models.list()]

    assert anthropic_ids == openai_ids == fake_llm.models
    assert fake_llm.generation_requests() == []


async def test_scripted_faults_are_consumed_one_at_a_time(fake_llm):
    fake_llm.fail_next(500)
    fake_llm.reply("recovered")
    client = openai.AsyncOpenAI(api_key="k", base_url=fake_llm.openai_url, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="fake-gpt", messages=messages)
    reply = await client.chat.completions.create(model="fake-gpt", messages=messages)

    assert reply.choices[0].message.content == "recovered"
    assert len(fake_llm.generation_requests()) == 2


async def test_overloaded_error_uses_anthropics_error_shape(fake_llm):
    fake_llm.fail_next(529)
    client = anthropic.AsyncAnthropic(api_key="k", base_url=fake_llm.url, max_retries=0)

    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_runs_standalone_for_benchmarks():
    # Port 0: the server binds a free port itself and prints it, so nothing can take it in between.
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", "--rate", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = re.search(r"fake LLM server on http://127\.0\.0\.1:(\d+) ", process.stdout.readline())
        assert banner
        port = int(banner.group(1))
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                    body = json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert body["object"] == "list"
    finally:
        process.terminate()
        process.wait(timeout=10)
