"""CPU an event loop spends per streamed chunk: the provider SDK's stream read, on each loop and network backend.

    .venv/bin/python bench/stream_cpu.py        # BENCH_STREAMS=100 BENCH_RATE=40 BENCH_ROUNDS=3

BENCH_STREAMS concurrent Anthropic SDK streams (the client `http_adapters.sdk_http_client` builds) read to
their end on one event loop, from the wire-level fake (tests/fakes/llm_server.py) in a process of its own
sending BENCH_RATE chunks a second per stream (one chunk per TCP read). Measured: this process's CPU time
(user + system, so the machine's load does not count) per chunk received, for each event loop
(ENGINE_EVENT_LOOP: asyncio, uvloop) and network backend (httpcore2's anyio backend, the loop's own
transports: providers/asyncio_backend.py), rounds interleaved; the median round is printed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-stream-cpu"))

import django  # noqa: E402

django.setup()

import anthropic  # noqa: E402
import uvloop  # noqa: E402

from orchestration.providers import http_adapters  # noqa: E402

STREAMS = int(os.environ.get("BENCH_STREAMS", "100"))
RATE = float(os.environ.get("BENCH_RATE", "40"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def stream_all(url: str) -> int:
    """Run STREAMS concurrent streams to their end; the chunks (text deltas) received."""
    http = http_adapters.sdk_http_client(anthropic, 30)
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=url, http_client=http)

    async def one() -> int:
        chunks = 0
        stream = await client.messages.create(  # as the engine's adapter reads a reply (AnthropicAdapter.stream)
            model="claude-sonnet-4-5", max_tokens=1024, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async with stream:
            async for event in stream:
                chunks += event.type == "content_block_delta"
        return chunks

    try:
        return sum(await asyncio.gather(*(one() for _ in range(STREAMS))))
    finally:
        await client.close()


def measure(url: str, loop: str, backend: str) -> float:
    """CPU microseconds per chunk of one round."""
    http_adapters.ASYNCIO_NETWORK_BACKEND = backend == "asyncio"
    started = time.process_time()
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        chunks = runner.run(stream_all(url))
    return (time.process_time() - started) * 1e6 / chunks


def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.llm_server", "--port", str(port), "--rate", str(RATE)],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        time.sleep(2)
        configs = [(loop, backend) for loop in LOOPS for backend in ("anyio", "asyncio")]
        results: dict[tuple[str, str], list[float]] = {config: [] for config in configs}
        for _ in range(ROUNDS):
            for config in configs:
                results[config].append(measure(url, *config))
    finally:
        fake.terminate()
        fake.wait(10)
    print(f"{STREAMS} concurrent streams, {RATE:g} chunks/s each, {ROUNDS} rounds; load average {os.getloadavg()}")
    print("| event loop | network backend | CPU µs per chunk, median (rounds) |")
    print("|---|---|---|")
    for (loop, backend), values in results.items():
        rounds = " / ".join(f"{v:.0f}" for v in values)
        print(f"| {loop} | {backend} | {statistics.median(values):.0f} ({rounds}) |")


if __name__ == "__main__":
    main()
