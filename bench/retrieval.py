"""Retrieval at the largest session the product allows: 20 references of 200,000 characters each.

Measures, side by side in one run: chunking + indexing time per reference, and the latency of a search
(a brief-sized query, k=8) through the database's own full-text search (SQLite FTS5 or PostgreSQL
tsvector/GIN) against a plain scan of the same passages in Python (ScanRetriever, the fallback for other
databases): p50 / p95 and the ratio. Also runs the hostile queries of tests/orchestration/test_retrieval.py
and reports any error (there must be none).

    .venv/bin/python bench/retrieval.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench ATELIER_VAR_DIR=var/bench-pg \
      .venv/bin/python bench/retrieval.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("ATELIER_VAR_DIR", str(ROOT / "var" / "bench-retrieval"))
os.environ.setdefault("Q_CLUSTER_NAME", "atelier-bench-retrieval")

import harness  # noqa: E402 - sets up Django the same way as the other benches

REFERENCES = int(os.environ.get("BENCH_REFERENCES", "20"))
CHARS = int(os.environ.get("BENCH_REFERENCE_CHARS", "200000"))
QUERIES = int(os.environ.get("BENCH_QUERIES", "200"))


def corpus(seed: int) -> str:
    """Deterministic prose-like text: paragraphs of sentences over a 4,000-word vocabulary, some headings."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnoprstuvw") for _ in range(rng.randint(3, 10))) for _ in range(4000)]
    parts, size = [], 0
    while size < CHARS:
        if rng.random() < 0.1:
            parts.append("## " + " ".join(rng.choices(vocabulary, k=3)).capitalize())
        sentences = [" ".join(rng.choices(vocabulary, k=rng.randint(8, 20))).capitalize() + "." for _ in range(5)]
        parts.append(" ".join(sentences))
        size += len(parts[-1]) + 2
    return "\n\n".join(parts)[:CHARS]


def main() -> None:
    from django.contrib.auth import get_user_model

    from orchestration.models import Passage, Project, ReferenceDocument, WritingSession
    from orchestration.retrieval import ScanRetriever, get_retriever, index_references, search
    from tests.orchestration.test_retrieval import HOSTILE_QUERIES

    harness.setup_database()
    user, _ = get_user_model().objects.get_or_create(username="retrieval-bench@example.com")
    Project.objects.filter(owner=user).delete()
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=user, name="Bench"), title="Bench", brief="Bench"
    )
    texts = [corpus(seed) for seed in range(REFERENCES)]
    index_seconds = []
    for number, text in enumerate(texts):
        reference = ReferenceDocument.objects.create(session=session, title=f"Reference {number}", content=text)
        started = time.perf_counter()
        index_references([reference])
        index_seconds.append(time.perf_counter() - started)
    passages = Passage.objects.filter(session=session).count()

    rng = random.Random(99)
    words = " ".join(texts).split()
    queries = [" ".join(rng.choices(words, k=30)) for _ in range(QUERIES)]  # about a brief's worth of words
    backend, scan = get_retriever(), ScanRetriever()
    scope = Passage.objects.filter(session=session)
    fts_ms, scan_ms = [], []
    for query in queries:  # interleaved, so both see the same machine load
        started = time.perf_counter()
        backend.search(query, scope=scope, k=8)
        fts_ms.append((time.perf_counter() - started) * 1000)
        if len(scan_ms) < 20:  # the scan is slow: 20 samples are enough for its median
            started = time.perf_counter()
            scan.search(query, scope=scope, k=8)
            scan_ms.append((time.perf_counter() - started) * 1000)
    errors = []
    for query in HOSTILE_QUERIES:
        try:
            search(query, session=session, k=8)
        except Exception as exc:  # noqa: BLE001 - reported: there must be none
            errors.append(f"{query[:30]!r}: {exc}")

    from django.db import connection

    print(f"database: {connection.vendor}; backend: {type(backend).__name__}")
    print(f"corpus: {REFERENCES} references x {CHARS:,} characters = {passages:,} passages")
    print(
        f"chunk + index per reference: median {statistics.median(index_seconds) * 1000:.0f} ms, "
        f"max {max(index_seconds) * 1000:.0f} ms"
    )
    print(
        f"search (30-word query, k=8), {len(fts_ms)} queries: p50 {harness.pct(fts_ms, 50):.1f} ms, "
        f"p95 {harness.pct(fts_ms, 95):.1f} ms"
    )
    print(f"plain scan of the same passages, {len(scan_ms)} queries: p50 {harness.pct(scan_ms, 50):.1f} ms")
    print(f"ratio scan / full-text (p50): {harness.pct(scan_ms, 50) / harness.pct(fts_ms, 50):.1f}x")
    print(f"hostile queries: {len(HOSTILE_QUERIES)} run, {len(errors)} errors" + "".join(f"\n  {e}" for e in errors))
    Project.objects.filter(owner=user).delete()


if __name__ == "__main__":
    main()
