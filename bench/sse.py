"""Event-stream latency: a provider chunk -> an API client reading Server-Sent Events (see docs/benchmarks.md).

    .venv/bin/python bench/sse.py                     # embedded defaults (SQLite + embedded Redis)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/sse.py                 # PostgreSQL + Redis

The real path, every process real: the wire-level fake LLM server (tests/fakes/llm_server.py)
streams a reply through the Anthropic SDK inside a django-q2 worker; the engine batches chunks into
the event log and pushes them through the channel layer; daphne serves
``GET /api/v1/sessions/{id}/events`` to a client authenticated with an API key. The fake stamps
the moment it writes each marker ``w00001``; the client stamps the moment the SSE line carrying it
arrives. In the same run, the same measurement through the live page's WebSocket (bench/harness.py)
gives the side-by-side ratio. Then the cost of a resume: the time to first event of a reconnect
with ``Last-Event-ID`` in the middle of a finished run's log.

Prints a Markdown table.
"""

from __future__ import annotations

import http.client
import os
import re
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # harness sets Django up
    EVALUATION,
    _provider_env,
    make_session,
    make_user,
    pct,
    setup_database,
)

MARKERS = int(os.environ.get("BENCH_MARKERS", "200"))
RESUMES = int(os.environ.get("BENCH_RESUMES", "50"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))


def open_stream(url: str, path: str, key: str, headers: dict | None = None) -> tuple:
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    sent = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream", **(headers or {})}
    conn.request("GET", path, headers=sent)
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"stream refused: {response.status} {response.read()[:300]!r}")
    return conn, response


class Markers:
    """Timestamps of marker i: when the fake provider wrote it, and when a client read it."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.emitted: dict[int, float] = {}
        handler = fake._httpd.RequestHandlerClass
        self.original = handler._write_chunk
        emitted, original = self.emitted, self.original

        def timed_write(handler_self, event: str) -> None:
            original(handler_self, event)
            for match in re.finditer(r"w(\d{5})", event):
                emitted.setdefault(int(match.group(1)), time.time())

        handler._write_chunk = timed_write

    def close(self) -> None:
        self.fake._httpd.RequestHandlerClass._write_chunk = self.original

    def session(self, user):
        """A one-turn session whose reply is MARKERS markers, one per provider chunk, 50 chunks/s."""
        self.emitted.clear()
        self.fake.chunk_size = 7  # one "w00001 " marker per chunk
        self.fake.tokens_per_second = 50
        self.fake.reply("".join(f"w{i:05d} " for i in range(MARKERS)) + EVALUATION)
        session = make_session(user, self.fake, rounds=1)
        session.agents.filter(name="Editor").update(active=False)
        return session

    def latencies(self, received: dict[int, float], since: float) -> list[float]:
        """Only markers the provider wrote after the client was connected count."""
        return [received[i] - self.emitted[i] for i in received if self.emitted.get(i, 0) >= since]


def sse_latency(markers: Markers, user, key: str, url: str) -> tuple[list[float], int]:
    """Provider writes marker i -> the SSE client reads the line carrying it."""
    from orchestration import services

    session = markers.session(user)
    received: dict[int, float] = {}
    services.start_session(session=session, user=user)  # first: a draft's stream ends at once
    conn, response = open_stream(url, f"/api/v1/sessions/{session.pk}/events", key)
    connected_at = time.time()
    while line := response.readline():
        now = time.time()
        if line.startswith(b"event: end"):
            break
        if line.startswith(b"data: "):
            for match in re.finditer(rb"w(\d{5})", line):
                received.setdefault(int(match.group(1)), now)
    conn.close()
    return markers.latencies(received, connected_at), session.pk


def websocket_latency(markers: Markers, user, url: str) -> list[float]:
    """The same through the live page's WebSocket (server-rendered fragments), for the side-by-side ratio."""
    import asyncio
    import json

    import websockets
    from django.contrib.sessions.backends.db import SessionStore

    from orchestration import services

    store = SessionStore()
    store["_auth_user_id"] = str(user.pk)
    store["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    store["_auth_user_hash"] = user.get_session_auth_hash()
    store.create()
    session = markers.session(user)
    received: dict[int, float] = {}
    connected_at = 0.0

    async def listen() -> None:
        nonlocal connected_at
        ws_url = url.replace("http://", "ws://") + f"/ws/sessions/{session.pk}/"
        headers = {"Cookie": f"sessionid={store.session_key}", "Origin": url}
        async with websockets.connect(ws_url, additional_headers=headers) as socket:
            await socket.send(json.dumps({"type": "catch_up", "after": 0}))
            connected_at = time.time()
            await asyncio.to_thread(services.start_session, session=session, user=user)
            async with asyncio.timeout(120):
                while len(received) < MARKERS:
                    message = json.loads(await socket.recv())
                    now = time.time()
                    for fragment in message.get("fragments", []):
                        for match in re.finditer(r"w(\d{5})", fragment.get("html", "")):
                            received.setdefault(int(match.group(1)), now)
                    if message.get("status") in ("completed", "failed", "stopped"):
                        break  # a finished card shows its changes, not every chunk: count what never came
            if len(received) < MARKERS:
                print(f"WebSocket: {MARKERS - len(received)} of {MARKERS} markers never shown live", flush=True)

    asyncio.run(listen())
    return markers.latencies(received, connected_at)


def resume_latency(url: str, key: str, session_id: int, last_seq: int) -> list[float]:
    """Reconnect with Last-Event-ID in the middle of the log -> the first event arrives."""
    out = []
    for i in range(RESUMES):
        position = max(0, last_seq // 2 + (i % 5) - 2)
        start = time.perf_counter()
        conn, response = open_stream(
            url, f"/api/v1/sessions/{session_id}/events", key, {"Last-Event-ID": str(position)}
        )
        seen = []
        while not (line := response.readline()).startswith(b"id: "):
            seen.append(line)
            if not line:
                raise RuntimeError(f"the stream ended before its first event: {b''.join(seen)[:500]!r}")
        out.append(time.perf_counter() - start)
        conn.close()
    return out


def main() -> None:
    from django.conf import settings
    from django.db import connection

    from api.services import create_api_key
    from orchestration.models import WritingSession
    from orchestration.providers import clear_adapter_cache
    from tests.fakes.llm_server import FakeLLMServer
    from tests.live import start_web, start_worker

    backend = "PostgreSQL + Redis" if os.environ.get("DATABASE_URL") else "SQLite + embedded Redis"
    print(f"# Atelier SSE benchmark — {backend} — {connection.vendor}, markers={MARKERS} x {REPEATS}", flush=True)
    setup_database()
    user = make_user()
    _, key = create_api_key(owner=user, name=f"bench {time.time_ns()}")
    sse: list[float] = []
    websocket: list[float] = []
    with FakeLLMServer() as fake:
        env = _provider_env(fake)
        os.environ.update(env)
        settings.PROVIDERS["anthropic"].update(api_key="bench", base_url=fake.url)
        settings.PROVIDERS["openai"].update(api_key="bench", base_url=fake.openai_url)
        clear_adapter_cache()
        worker = start_worker(**env)
        web, url = start_web(**env)
        markers = Markers(fake)
        try:
            time.sleep(3)  # the worker's cluster boots
            sse_latency(markers, user, key, url)  # warm-up: imports, connections, first-request costs
            for _ in range(REPEATS):  # interleaved, same processes: a fair side-by-side
                websocket += websocket_latency(markers, user, url)
                values, session_id = sse_latency(markers, user, key, url)
                sse += values
            finished = WritingSession.objects.get(pk=session_id)
            resumes = resume_latency(url, key, finished.pk, finished.last_seq)
        finally:
            markers.close()
            web.stop()
            worker.stop()
    rows = [
        ("Chunk latency provider -> SSE client (API key)", sse, 150),
        ("Chunk latency provider -> WebSocket client (same processes, interleaved)", websocket, 150),
        ("Resume: reconnect with Last-Event-ID -> first event", resumes, None),
    ]
    print()
    print("| measurement | n | median ms | p95 ms | p99 ms | target |")
    print("|---|---|---|---|---|---|")
    for name, values, target in rows:
        ms = [v * 1000 for v in values]
        goal = f"<= {target} ms" if target else ""
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {pct(ms, 95):.1f} | {pct(ms, 99):.1f} | {goal} |")
    ratio = pct([v * 1000 for v in sse], 99) / pct([v * 1000 for v in websocket], 99)
    print(f"\nSSE p99 / WebSocket p99 (same run): {ratio:.2f} x; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
