"""A real local HTTP server that speaks the Anthropic Messages and OpenAI Chat Completions wire protocols.

The official SDKs talk to it exactly as they would to the real APIs (they use httpx2, which respx and
pytest-httpx do not intercept), so tests exercise our adapters, the SDKs' parsing and real sockets.

Usage in a test (the `fake_llm` fixture starts one per test)::

    def test_something(fake_llm, settings):
        settings.PROVIDERS = fake_llm.provider_settings()
        fake_llm.reply("Hello world")                 # next generation request answers this
        fake_llm.fail_next(429, retry_after=1)        # ...or fails first
        fake_llm.tokens_per_second = 20               # pace the stream (0 = instant)
        ...
        assert fake_llm.generation_requests()[0].json["model"] == "claude-x"

Standalone, for benchmarks: ``python -m tests.fakes.llm_server --port 8765 --rate 200 --latency 0.2``.

Routes:
- ``POST /v1/messages`` (Anthropic; streaming SSE with ``event:`` lines, or JSON)
- ``POST /v1/chat/completions`` (OpenAI; streaming ``data:`` chunks ending in ``[DONE]``, or JSON)
- ``GET /v1/models`` (shape chosen by the ``anthropic-version`` request header)

Usage numbers are deterministic: a token is ~4 characters of prompt; output tokens = chunks emitted.

Reasoning (``fake_llm.reply("answer", thinking="step by step...")``), as the real APIs do it:
- Anthropic, when the request has ``thinking={"type": "enabled", "budget_tokens": N}``: a ``thinking``
  content block first (``thinking_delta`` pieces, capped at N chunks, then one ``signature_delta``), then
  the text block; ``output_tokens`` counts both and ``output_tokens_details.thinking_tokens`` the thinking.
  The request is refused (400) when N < 1024, N >= max_tokens, or temperature / top_k are sent with it.
- OpenAI reasoning models (ids starting with ``openai_reasoning_prefixes``): the thinking is not streamed,
  only counted in ``completion_tokens`` and ``completion_tokens_details.reasoning_tokens``; they refuse
  ``temperature`` (other than 1) and ``max_tokens``; other models refuse ``reasoning_effort``.
  With ``reasoning_field = "reasoning_content"`` the thinking streams in that delta field instead
  (DeepSeek / vLLM style). Thinking and text together stop at the request's max tokens.
Tool calls (``fake_llm.reply("Let me check.", tool_calls=[{"name": "search", "arguments": {"q": "x"}}])``),
streamed as the real APIs do: Anthropic a ``tool_use`` content block (``content_block_start`` with id and name,
the JSON input in ``input_json_delta`` pieces, ``content_block_stop``) after the text block and
``stop_reason: "tool_use"``; OpenAI ``delta.tool_calls[i]`` (the first piece carries index, id, type and the
function name with empty arguments, the rest argument pieces) and ``finish_reason: "tool_calls"``.
``arguments`` may be a dict (sent as JSON) or a raw string (e.g. invalid JSON). A model in
``no_tool_models`` answers a request that offers ``tools`` with a 400, like servers without tool support.
A system prompt seen before counts as a cache hit (Anthropic cache_read_input_tokens when the request
asked for cache_control, OpenAI prompt_tokens_details.cached_tokens always, as OpenAI caches automatically).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
ERROR_MESSAGES = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    403: "Permission denied.",
    404: "The requested model does not exist.",
    429: "Rate limit reached for requests. Please try again later.",
    500: "Internal server error.",
    503: "Service unavailable.",
    529: "Overloaded",
}
ANTHROPIC_MIN_CACHEABLE_TOKENS = 1024
ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
GENERATION_PATHS = (ANTHROPIC_PATH, OPENAI_PATH)


def count_tokens(text: str) -> int:
    """Roughly one token per four characters, as the real tokenizers average on English."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any
    received_at: float = field(default_factory=time.monotonic)

    @property
    def api_key(self) -> str | None:
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth.removeprefix("Bearer ").strip() if auth else None

    @property
    def system_text(self) -> str:
        """The system prompt, whichever API shape carried it."""
        body = self.json or {}
        if self.path == ANTHROPIC_PATH:
            system = body.get("system") or ""
            if isinstance(system, list):
                return "".join(block.get("text", "") for block in system)
            return system
        return "".join(str(m.get("content") or "") for m in body.get("messages", []) if m.get("role") == "system")

    @property
    def user_text(self) -> str:
        body = self.json or {}
        parts: list[str] = []
        for message in body.get("messages", []):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                parts.extend(block.get("text", "") for block in content if isinstance(block, dict))
            else:
                parts.append(str(content or ""))
        return "\n".join(parts)


@dataclass
class Reply:
    """A scripted reply. `text` may be a string or a callable of the RecordedRequest.

    The odd streams real servers send:
    - `stop_reason`: any value, sent as is ("refusal", "content_filter", "pause_turn", "tool_calls", ...).
    - `stop_details`: Anthropic's message_delta.delta.stop_details ({"type": "refusal", "explanation": ...}).
    - `refusal`: OpenAI only: text sent as `delta.refusal` pieces instead of content.
    - `zero_usage`: the usage reports 0 prompt and 0 completion tokens (vLLM-style servers).
    - `chunks`: the exact text deltas to send (e.g. a surrogate pair split in two: "abc\\ud83c", "\\udf33def").
    """

    text: str | Callable[[RecordedRequest], str]
    stop_reason: str | None = None  # None: "end_turn"/"stop", or max-tokens when the text was cut
    stop_details: dict | None = None
    refusal: str | None = None
    zero_usage: bool = False
    chunks: list[str] | None = None
    thinking: str = ""  # the model's reasoning, sent only when the request enables it (see module doc)
    # [{"name", "arguments": dict | str, "id" (optional)}], or a callable of the RecordedRequest returning that.
    tool_calls: list[dict] | Callable[[RecordedRequest], list[dict]] | None = None


@dataclass
class Fault:
    kind: str  # "status", "stall", "disconnect"
    status: int = 500
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None
    after_chunks: int = 0


class FakeLLMServer:
    """The controller tests talk to. Thread-safe; the HTTP handler threads read it under a lock."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lock = threading.Lock()
        # Bounded so a long benchmark run does not grow without limit.
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=10_000)
        self.replies: collections.deque[Reply] = collections.deque()
        self.faults: collections.deque[Fault] = collections.deque()
        self.default_reply: str | Callable[[RecordedRequest], str] = default_reply
        self.latency: float = 0.0  # seconds before the first byte (headers) of a generation reply
        self.tokens_per_second: float = 0.0  # chunks per second; 0 = as fast as possible
        self.chunk_size: int = 4  # characters per chunk (~one token each)
        self.stall_seconds: float = 60.0  # how long a stall hangs if the client never gives up
        self.expected_api_key: str | None = None  # when set, other keys get a 401 in the API's shape
        self.models: list[str] = ["fake-claude", "fake-gpt"]
        # model id -> context window in tokens: a longer prompt gets the API's real "too long" 400.
        self.context_limits: dict[str, int] = {}
        self.always: Fault | None = None
        # OpenAI models that reason (and so refuse temperature and max_tokens, and take reasoning_effort).
        self.openai_reasoning_prefixes: tuple[str, ...] = ("o1", "o3", "o4", "gpt-5")
        # "" (OpenAI: reasoning is only counted) or "reasoning_content" (streamed in that delta field).
        self.reasoning_field: str = ""
        self.no_tool_models: set[str] = set()  # these refuse requests that offer tools (400)
        self.client_disconnects = 0  # streams the client closed before the server finished
        # Generation requests being answered right now, and the most ever at once, by key: "all", the API
        # ("anthropic" / "openai") and "model:<id>". A test reads peak_concurrency(...) after a run.
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.peak_in_flight: collections.Counter[str] = collections.Counter()
        self.client_disconnected = threading.Event()
        self._seen_prefixes: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK (it adds /v1 itself)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK (it expects /v1 in the base URL)."""
        return f"{self.url}/v1"

    def start(self) -> FakeLLMServer:
        # A short poll interval makes stop() quick: tests start and stop one server each.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting -----------------------------------------------------------------------------
    def reply(
        self,
        *texts: str | Callable[[RecordedRequest], str],
        stop_reason: str | None = None,
        thinking: str = "",
        **odd: Any,
    ) -> None:
        """Queue replies for the next generation requests, in order (each with this `thinking`).

        `odd`: the other fields of Reply (stop_details, refusal, zero_usage, chunks).
        """
        with self.lock:
            self.replies.extend(Reply(text, stop_reason, thinking=thinking, **odd) for text in texts)

    def fail_always(self, status: int, *, retry_after: float | None = None, message: str | None = None) -> None:
        """Every generation request from now on gets this HTTP error (until reset())."""
        with self.lock:
            self.always = Fault("status", status=status, retry_after=retry_after, message=message)

    def fail_next(
        self, status: int, *, retry_after: float | None = None, message: str | None = None, code: str | None = None
    ) -> None:
        """The next generation request gets this HTTP error (in the API's JSON error shape).

        `code` overrides the error type (Anthropic) or code (OpenAI), e.g. "insufficient_quota".
        """
        with self.lock:
            self.faults.append(Fault("status", status=status, retry_after=retry_after, message=message, code=code))

    def stall_next(self, *, after_chunks: int = 1) -> None:
        """The next stream sends `after_chunks` chunks, then nothing until the client gives up."""
        with self.lock:
            self.faults.append(Fault("stall", after_chunks=after_chunks))

    def disconnect_next(self, *, after_chunks: int = 1) -> None:
        """The next stream sends `after_chunks` chunks, then the socket is closed without an ending."""
        with self.lock:
            self.faults.append(Fault("disconnect", after_chunks=after_chunks))

    def end_early_next(self, *, after_chunks: int = 1) -> None:
        """The next stream ends cleanly after `after_chunks` chunks, without its closing events."""
        with self.lock:
            self.faults.append(Fault("end_early", after_chunks=after_chunks))

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.replies.clear()
            self.faults.clear()
            self.always = None
            self._seen_prefixes.clear()
            self.client_disconnects = 0
            self.client_disconnected.clear()
            self.in_flight.clear()
            self.peak_in_flight.clear()

    # --- inspection ---------------------------------------------------------------------------
    def generation_requests(self) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path in GENERATION_PATHS]

    def peak_concurrency(self, key: str = "all") -> int:
        """The most generation requests answered at the same time: "all", "anthropic", "openai" or "model:<id>"."""
        with self.lock:
            return self.peak_in_flight[key]

    def _enter(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                self.in_flight[key] += 1
                self.peak_in_flight[key] = max(self.peak_in_flight[key], self.in_flight[key])

    def _leave(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                self.in_flight[key] -= 1

    @property
    def last_request(self) -> RecordedRequest:
        with self.lock:
            return self.requests[-1]

    def provider_settings(self, api_key: str = "test-key") -> dict[str, dict[str, str]]:
        """A settings.PROVIDERS value that points every provider at this server."""
        return {
            "anthropic": {"api_key": api_key, "base_url": self.url},
            "openai": {"api_key": api_key, "base_url": self.openai_url},
            "gemini": {"api_key": api_key, "base_url": self.openai_url},
            "xai": {"api_key": api_key, "base_url": self.openai_url},
            "compatible": {"api_key": "", "base_url": self.openai_url},
        }

    # --- used by the handler ----------------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> tuple[Fault | None, Reply | None, bool]:
        """Record a request; for generation, pop its fault or reply and decide whether the prefix is cached."""
        with self.lock:
            self.requests.append(request)
            if request.path not in GENERATION_PATHS:
                return None, None, False
            fault = self.faults.popleft() if self.faults else self.always
            if fault is not None and fault.kind == "status":
                return fault, None, False  # the scripted reply stays queued for the retry
            reply = self.replies.popleft() if self.replies else Reply(self.default_reply)
            # Caches are per API and model, as on the real services.
            body = request.json if isinstance(request.json, dict) else {}
            prefix = (request.path, str(body.get("model")), request.system_text)
            cached = bool(prefix[2]) and prefix in self._seen_prefixes
            if prefix[2]:
                self._seen_prefixes.add(prefix)
            return fault, reply, cached

    def _note_client_gone(self) -> None:
        with self.lock:
            self.client_disconnects += 1
        self.client_disconnected.set()


def default_reply(request: RecordedRequest) -> str:
    """A deterministic Markdown reply that names the model and echoes the first line of the prompt."""
    body = request.json or {}
    first_line = next((line.strip() for line in request.user_text.splitlines() if line.strip()), "the brief")
    return (
        f"# Draft\n\nThis is a scripted reply from the fake model {body.get('model', '?')} about "
        f"{first_line[:80]}. It is deterministic so tests can assert on it.\n\n"
        '<evaluation>\n```json\n{"scores": {"Quality": 7}, "overall": 7, "feedback": "Solid."}\n```\n</evaluation>\n'
    )


def _tool_call(call: dict, n: int) -> dict:
    """A scripted tool call with its id and its arguments as the JSON text the server streams."""
    arguments = call.get("arguments", {})
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call.get("id") or f"toolu_fake_{n}", "name": call["name"], "raw": raw}


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Each SSE event is its own small write; without TCP_NODELAY, Nagle + delayed ACK add
        # ~40 ms stalls that a real provider's server does not have.
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real APIs

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        # --- plumbing ---------------------------------------------------------------------------
        def _read_json(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return None

        def _headers_dict(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _send_json(self, status: int, payload: Any, extra_headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", "req_fake")
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_error(
            self,
            anthropic: bool,
            status: int,
            *,
            message: str | None,
            retry_after: float | None,
            code: str | None = None,
        ) -> None:
            message = message or ERROR_MESSAGES.get(status, "Error.")
            if anthropic:
                payload: dict[str, Any] = {
                    "type": "error",
                    "error": {"type": code or ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
                }
            else:
                err_type, default_code = OPENAI_ERROR_TYPES.get(status, ("server_error", None))
                code = code or default_code
                payload = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
            headers = {}
            if retry_after is not None:
                headers["Retry-After"] = f"{retry_after:g}"
            self._send_json(status, payload, headers)

        def _start_stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id", "req_fake")
            self.end_headers()

        def _write_chunk(self, data: str) -> None:
            raw = data.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
            self.wfile.flush()

        def _end_stream(self) -> None:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _client_gone(self) -> bool:
            """True once the client closed its side (readable with nothing to read)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _stall(self) -> None:
            # Hang without writing (a write would reset the client's read timeout) until the client
            # gives up, the server stops, or stall_seconds pass.
            deadline = time.monotonic() + server.stall_seconds
            while time.monotonic() < deadline and not server._stop.is_set():
                if self._client_gone():
                    server._note_client_gone()
                    break
                time.sleep(0.02)
            self.close_connection = True

        def _disconnect(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)

        # --- routes ----------------------------------------------------------------------------------
        def do_GET(self) -> None:
            request = RecordedRequest("GET", self.path.split("?")[0], self._headers_dict(), None)
            server._record(request)
            anthropic = "anthropic-version" in request.headers
            if request.path != MODELS_PATH:
                self._send_error(anthropic, 404, message=f"Unknown path {request.path}", retry_after=None)
                return
            if not self._key_ok(request):
                self._send_error(anthropic, 401, message=None, retry_after=None)
                return
            if anthropic:
                data = [
                    {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                    for m in server.models
                ]
                payload = {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            else:
                payload = {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 1735689600, "owned_by": "fake"} for m in server.models
                    ],
                }
            self._send_json(200, payload)

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            request = RecordedRequest("POST", path, self._headers_dict(), self._read_json())
            if path not in GENERATION_PATHS:
                self._post(path, request)
                return
            body = request.json if isinstance(request.json, dict) else {}
            keys = ["all", "anthropic" if path == ANTHROPIC_PATH else "openai", f"model:{body.get('model')}"]
            server._enter(keys)
            try:
                self._post(path, request)
            finally:
                server._leave(keys)

        def _post(self, path: str, request: RecordedRequest) -> None:
            fault, reply, cached = server._record(request)
            anthropic = path == ANTHROPIC_PATH
            if path not in GENERATION_PATHS:
                self._send_error(anthropic, 404, message=f"Unknown path {path}", retry_after=None)
                return
            if server.latency:
                time.sleep(server.latency)
            if not self._key_ok(request):
                self._send_error(anthropic, 401, message=None, retry_after=None)
                return
            if fault is not None and fault.kind == "status":
                self._send_error(
                    anthropic, fault.status, message=fault.message, retry_after=fault.retry_after, code=fault.code
                )
                return
            body = request.json if isinstance(request.json, dict) else {}
            if not body.get("model"):
                self._send_error(anthropic, 400, message="model: field required", retry_after=None)
                return
            limit = server.context_limits.get(str(body.get("model")))
            prompt_tokens = count_tokens(request.system_text) + count_tokens(request.user_text)
            if limit is not None and prompt_tokens > limit:
                self._send_too_long(anthropic, prompt_tokens, limit)
                return
            assert reply is not None
            if body.get("tools") and str(body.get("model")) in server.no_tool_models:
                self._send_error(anthropic, 400, message="This model does not support tools.", retry_after=None)
                return
            refusal = _refused_reasoning_params(body, anthropic, server.openai_reasoning_prefixes)
            if refusal:
                self._send_error(anthropic, 400, message=refusal, retry_after=None)
                return
            text = reply.text(request) if callable(reply.text) else reply.text
            calls = reply.tool_calls(request) if callable(reply.tool_calls) else reply.tool_calls
            calls = [_tool_call(call, n) for n, call in enumerate(calls or [])]
            pieces = list(reply.chunks) if reply.chunks is not None else _chunks(text, server.chunk_size)
            thoughts = _thinking_pieces(body, reply.thinking, anthropic, server)
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
            # Thinking comes first and counts against the same max tokens as the text.
            if max_tokens and len(thoughts) > int(max_tokens):
                thoughts = thoughts[: int(max_tokens)]
            room = int(max_tokens) - len(thoughts) if max_tokens else None
            truncated = room is not None and len(pieces) > room
            if truncated:
                pieces = pieces[:room]
            refusal_pieces = _chunks(reply.refusal, server.chunk_size) if reply.refusal and not anthropic else []
            output_tokens = len(thoughts) + len([p for p in pieces if p]) + len(refusal_pieces)
            output_tokens += sum(count_tokens(call["raw"]) + 1 for call in calls)
            usage = _usage(request, cached=cached, output_tokens=output_tokens)
            usage["reasoning_tokens"] = len(thoughts)
            if reply.zero_usage:
                usage = {"system_tokens": 0, "user_tokens": 0, "cached": 0, "output_tokens": 0, "reasoning_tokens": 0}
            if anthropic:
                stop_reason = reply.stop_reason or ("max_tokens" if truncated else "tool_use" if calls else "end_turn")
            else:
                stop_reason = reply.stop_reason or ("length" if truncated else "tool_calls" if calls else "stop")
            if not body.get("stream"):
                self._send_json(
                    200, (_anthropic_message if anthropic else _openai_completion)(body, pieces, usage, stop_reason)
                )
                return
            streamed_thoughts = thoughts if (anthropic or server.reasoning_field) else []
            if anthropic:
                events = _anthropic_events(
                    body,
                    pieces,
                    usage,
                    stop_reason,
                    thoughts=streamed_thoughts,
                    stop_details=reply.stop_details,
                    tool_calls=calls,
                )
            else:
                events = _openai_events(
                    body,
                    pieces,
                    usage,
                    stop_reason,
                    thoughts=streamed_thoughts,
                    reasoning_field=server.reasoning_field,
                    refusal=refusal_pieces,
                    tool_calls=calls,
                )
            self._stream(events, fault)

        def _send_too_long(self, anthropic: bool, prompt_tokens: int, limit: int) -> None:
            """The providers' real 400 bodies for a prompt over the context window."""
            if anthropic:
                payload: dict[str, Any] = {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"prompt is too long: {prompt_tokens} tokens > {limit} maximum",
                    },
                }
            else:
                payload = {
                    "error": {
                        "message": (
                            f"This model's maximum context length is {limit} tokens. However, your messages "
                            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
                        ),
                        "type": "invalid_request_error",
                        "param": "messages",
                        "code": "context_length_exceeded",
                    }
                }
            self._send_json(400, payload)

        def _key_ok(self, request: RecordedRequest) -> bool:
            return server.expected_api_key is None or request.api_key == server.expected_api_key

        def _stream(self, events: Iterator[tuple[str, bool]], fault: Fault | None) -> None:
            """Write SSE events; the bool marks a text chunk (faults and pacing count those)."""
            self._start_stream()
            delay = 1.0 / server.tokens_per_second if server.tokens_per_second > 0 else 0.0
            sent_chunks = 0
            try:
                for event, is_text in events:
                    if is_text:
                        if fault is not None and sent_chunks >= fault.after_chunks:
                            if fault.kind == "stall":
                                self._stall()
                            elif fault.kind == "end_early":
                                self._end_stream()
                            else:
                                self._disconnect()
                            return
                        if delay and sent_chunks:
                            time.sleep(delay)
                        sent_chunks += 1
                    self._write_chunk(event)
                self._end_stream()
            except (BrokenPipeError, ConnectionResetError):
                server._note_client_gone()
                self.close_connection = True

    return Handler


def _thinking_enabled(body: dict) -> int:
    """The Anthropic thinking budget the request asked for, 0 when thinking is off."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return int(thinking.get("budget_tokens") or 0)
    return 0


def _is_openai_reasoning_model(body: dict, prefixes: tuple[str, ...]) -> bool:
    return str(body.get("model") or "").startswith(prefixes)


def _refused_reasoning_params(body: dict, anthropic: bool, prefixes: tuple[str, ...]) -> str:
    """The real APIs' 400 messages for reasoning parameters they refuse; "" when the request is fine."""
    if anthropic:
        if "thinking" not in body:
            return ""
        budget = _thinking_enabled(body)
        if not budget:
            return ""
        if budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if budget >= int(body.get("max_tokens") or 0):
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
        if body.get("temperature") not in (None, 1):
            return "`temperature` may only be set to 1 when thinking is enabled."
        if body.get("top_k") is not None:
            return "`top_k` is not supported when thinking is enabled."
        return ""
    if _is_openai_reasoning_model(body, prefixes):
        if body.get("temperature") not in (None, 1):
            return (
                f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
                "Only the default (1) value is supported."
            )
        if "max_tokens" in body:
            return (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
        return ""
    if "reasoning_effort" in body:
        return "Unsupported parameter: 'reasoning_effort' is not supported with this model."
    return ""


def _thinking_pieces(body: dict, thinking: str, anthropic: bool, server: FakeLLMServer) -> list[str]:
    """The chunks of reasoning this request produces: none unless the request (or model) reasons."""
    if not thinking:
        return []
    if anthropic:
        budget = _thinking_enabled(body)
        return _chunks(thinking, server.chunk_size)[:budget] if budget else []
    if _is_openai_reasoning_model(body, server.openai_reasoning_prefixes) or server.reasoning_field:
        return _chunks(thinking, server.chunk_size)
    return []


def _usage(request: RecordedRequest, *, cached: bool, output_tokens: int) -> dict[str, int]:
    system_tokens = count_tokens(request.system_text)
    user_tokens = count_tokens(request.user_text)
    return {
        "system_tokens": system_tokens,
        "user_tokens": user_tokens,
        "cached": int(cached),
        "output_tokens": output_tokens,
    }


def _anthropic_usage(body: dict, usage: dict[str, int]) -> dict[str, int]:
    asked_to_cache = isinstance(body.get("system"), list) and any(
        isinstance(block, dict) and block.get("cache_control") for block in body["system"]
    )
    # As the real API: a marked prefix shorter than the model's minimum (1,024 tokens here) is not cached.
    cacheable = asked_to_cache and usage["system_tokens"] >= ANTHROPIC_MIN_CACHEABLE_TOKENS
    cache_read = usage["system_tokens"] if cacheable and usage["cached"] else 0
    cache_write = usage["system_tokens"] if cacheable and not usage["cached"] else 0
    # Anthropic's input_tokens excludes the tokens read from or written to the cache.
    input_tokens = usage["system_tokens"] + usage["user_tokens"] - cache_read - cache_write
    return {
        "input_tokens": input_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def _anthropic_message(body: dict, pieces: list[str], usage: dict[str, int], stop_reason: str) -> dict:
    output_usage: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
    if usage.get("reasoning_tokens"):
        output_usage["output_tokens_details"] = {"thinking_tokens": usage["reasoning_tokens"]}
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [{"type": "text", "text": "".join(pieces)}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**_anthropic_usage(body, usage), **output_usage},
    }


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _anthropic_events(
    body: dict,
    pieces: list[str],
    usage: dict[str, int],
    stop_reason: str,
    *,
    thoughts: list[str] = (),
    reasoning_field: str = "",
    stop_details: dict | None = None,
    tool_calls: list[dict] = (),
):
    start = _anthropic_message(body, [], usage, stop_reason)
    start.update(content=[], stop_reason=None)
    start["usage"]["output_tokens"] = 1
    start["usage"].pop("output_tokens_details", None)
    yield _sse("message_start", {"type": "message_start", "message": start}), False
    index = 0
    if thoughts:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}), False
        for piece in thoughts:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}
            yield _sse("content_block_delta", delta), True
        signature = {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": signature}), False
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0}), False
        index = 1
    yield (
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        ),
        False,
    )
    yield _sse("ping", {"type": "ping"}), False
    for piece in pieces:
        delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        yield _sse("content_block_delta", delta), True
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": index}), False
    for call in tool_calls:
        index += 1
        block = {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}
        start_block = {"type": "content_block_start", "index": index, "content_block": block}
        yield _sse("content_block_start", start_block), False
        for piece in _chunks(call["raw"], 8) if call["raw"] else []:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}), True
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index}), False
    final_usage: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
    if usage.get("reasoning_tokens"):
        final_usage["output_tokens_details"] = {"thinking_tokens": usage["reasoning_tokens"]}
    yield (
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None, "stop_details": stop_details},
                "usage": final_usage,
            },
        ),
        False,
    )
    yield _sse("message_stop", {"type": "message_stop"}), False


def _openai_usage(usage: dict[str, int]) -> dict:
    prompt = usage["system_tokens"] + usage["user_tokens"]
    cached = usage["system_tokens"] if usage["cached"] else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage["output_tokens"],
        "total_tokens": prompt + usage["output_tokens"],
        "prompt_tokens_details": {"cached_tokens": cached},
        # Like OpenAI: reasoning tokens are part of completion_tokens, broken out here.
        "completion_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
    }


def _openai_completion(body: dict, pieces: list[str], usage: dict[str, int], stop_reason: str) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1735689600,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(pieces)},
                "finish_reason": stop_reason,
            }
        ],
        "usage": _openai_usage(usage),
    }


def _openai_events(
    body: dict,
    pieces: list[str],
    usage: dict[str, int],
    stop_reason: str,
    *,
    thoughts: list[str] = (),
    reasoning_field: str = "",
    refusal: list[str] | None = None,
    tool_calls: list[dict] = (),
):
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1735689600, "model": body.get("model")}

    def chunk(delta: dict, finish: str | None) -> str:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None), False
    for piece in thoughts:  # only with a reasoning_field: OpenAI itself never streams reasoning
        yield chunk({reasoning_field: piece}, None), True
    for piece in pieces:
        yield chunk({"content": piece}, None), True
    for piece in refusal or []:
        yield chunk({"content": None, "refusal": piece}, None), True
    for n, call in enumerate(tool_calls):
        head = {"index": n, "id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": ""}}
        yield chunk({"tool_calls": [head]}, None), False
        for piece in _chunks(call["raw"], 8) if call["raw"] else []:
            yield chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]}, None), True
    yield chunk({}, stop_reason), False
    if (body.get("stream_options") or {}).get("include_usage"):
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': _openai_usage(usage)})}\n\n", False
    yield "data: [DONE]\n\n", False


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A fake LLM server on a free localhost port for one test."""
    server = FakeLLMServer().start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic/OpenAI server for local benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=0.0, help="chunks per second (0 = instant)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--chunk-size", type=int, default=4, help="characters per chunk")
    parser.add_argument(
        "--numbered", action="store_true", help="number each reply, so every writer turn changes the document"
    )
    args = parser.parse_args()
    server = FakeLLMServer(args.host, args.port)
    server.tokens_per_second = args.rate
    server.latency = args.latency
    server.chunk_size = args.chunk_size
    if args.numbered:
        counter = itertools.count(1)

        def numbered(request: RecordedRequest) -> str:
            return default_reply(request).replace("# Draft", f"# Draft {next(counter)}", 1)

        server.default_reply = numbered
    print(f"fake LLM server on http://{args.host}:{server.port} (Anthropic base URL; OpenAI: /v1)", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
