"""Shared by every peer script: the writer/editor workload, its prompts, and the timing loop.

Standard library only (it runs in the app's venv and in var/bench-venv). Overhead per call =
(median framework run - median baseline run) / calls, where the baseline is the plain openai SDK
doing the same 20 streamed calls in the same process, interleaved run by run with the framework.
"""

from __future__ import annotations

import json
import os
import statistics
import time

ROUNDS = int(os.environ.get("PEERS_ROUNDS", "10"))  # 10 rounds x (writer, editor) = 20 streamed calls
RUNS = int(os.environ.get("PEERS_RUNS", "7"))
CALLS = ROUNDS * 2
MODEL = "gpt-4.1"
BRIEF = "Why cities need trees."
WRITER = "You are the writer. Write and revise the document from the editor's notes. " * 5
EDITOR = "You are the editor. Critique the document and give concrete notes. " * 5


def base_url() -> str:
    """The instant fake server's OpenAI base URL (started by bench/peers/run.py)."""
    return os.environ["PEERS_OPENAI_BASE_URL"]


def writer_messages(document: str, notes: str) -> list[dict]:
    user = f"Brief: {BRIEF}\n\nDocument:\n{document or '(none yet)'}\n\nEditor's notes:\n{notes or '(none)'}"
    return [{"role": "system", "content": WRITER}, {"role": "user", "content": user}]


def editor_messages(document: str) -> list[dict]:
    return [{"role": "system", "content": EDITOR}, {"role": "user", "content": f"Brief: {BRIEF}\n\n{document}"}]


def measure(name: str, baseline, framework, *, runs: int = RUNS) -> dict:
    """Run baseline() and framework() alternately `runs` times (after one warm-up each); print one JSON line.

    framework() may return the seconds it wants counted (to leave out setting up its input); else all of it.
    """
    baseline()
    framework()
    base, frame = [], []
    for _ in range(runs):
        start = time.perf_counter()
        baseline()
        base.append(time.perf_counter() - start)
        start = time.perf_counter()
        counted = framework()
        frame.append(counted if counted is not None else time.perf_counter() - start)
    result = {
        "framework": name,
        "calls": CALLS,
        "runs": runs,
        "baseline_median_ms": statistics.median(base) * 1000,
        "framework_median_ms": statistics.median(frame) * 1000,
        "overhead_per_call_ms": (statistics.median(frame) - statistics.median(base)) / CALLS * 1000,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return result
