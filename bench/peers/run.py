"""One command for the peers table: LangGraph (no checkpointer, SQLite, PostgreSQL) and Atelier (embedded
defaults, PostgreSQL + Redis) on the same writer/editor workload, against one instant fake server.

    .venv/bin/python bench/peers/run.py
    PEERS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench PEERS_REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/peers/run.py

LangGraph and its checkpointers are pinned in requirements-bench.txt and installed into var/bench-venv
(created on first run), never into the app's venv. Each framework runs in its own process and times the
plain openai SDK loop interleaved with itself as its baseline. Without PEERS_DATABASE_URL the PostgreSQL
rows are skipped. Every peer runs once per pass, in turn, PEERS_PASSES passes (default 3): the machine's
speed drifts over minutes here, so a ratio is taken between two peers of the same pass, and the table
gives the median of the passes' ratios and their range. Prints a Markdown table with each row's ratio to
LangGraph + PostgreSQL.
PEERS_BEFORE_TREE=<an older checkout> (and PEERS_BEFORE_DATABASE_URL, its own database) adds that tree's
Atelier rows, labelled "(before)", to the same run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BENCH_VENV = ROOT / "var" / "bench-venv"
APP_PYTHON = sys.executable


def bench_python() -> str:
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / "requirements-bench.txt"
    wanted = (ROOT / "requirements-bench.txt").read_text()
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing requirements-bench.txt into {BENCH_VENV} ...", file=sys.stderr, flush=True)
        venv.create(BENCH_VENV, with_pip=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-bench.txt")], check=True
        )
        stamp.write_text(wanted)
    return str(python)


def start_fake() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [APP_PYTHON, "-m", "tests.fakes.llm_server", "--port", "0", "--numbered"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return process, f"http://127.0.0.1:{match.group(1)}/v1"


def run(python: str, script: str, *args: str, env: dict[str, str], tree: Path = ROOT, label: str = "") -> dict:
    print(f"running {script} {' '.join(args)} {label}...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [python, str(tree / "bench" / "peers" / script), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
        raise SystemExit(f"{script} {' '.join(args)} failed")
    result: dict = {}
    # find and raw_decode: another thread of the peer (the mail thread's console email backend) may write on the
    # same line, before or right after a line's JSON.
    decode = json.JSONDecoder().raw_decode
    for line in out.stdout.splitlines():
        if (at := line.find("RESULT {")) >= 0:
            result.update(decode(line[at + 7 :])[0])
        elif (at := line.find("STATEMENTS {")) >= 0:
            counted = decode(line[at + 11 :])[0]
            result["statements_per_call"] = counted["per_call"]
            if "db_ms_per_call" in counted:  # an older tree's peer (PEERS_BEFORE_TREE) may not time them
                result["db_ms_per_call"] = counted["db_ms_per_call"]
    if "framework" not in result:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"{script} {' '.join(args)} printed no RESULT line")
    if label:
        result["framework"] += f" {label}"
    return result


def atelier_rows(env: dict[str, str], database_url: str, redis_url: str, tree: Path = ROOT, label: str = "") -> list:
    """Atelier on the embedded defaults, then (with a database URL) on PostgreSQL + Redis."""
    rows = [run(APP_PYTHON, "atelier_peer.py", env=env, tree=tree, label=label)]
    if database_url:
        pg = {**env, "DATABASE_URL": database_url, "Q_CLUSTER_NAME": "atelier-bench-peers"}
        if redis_url:
            pg["REDIS_URL"] = redis_url
        rows.append(run(APP_PYTHON, "atelier_peer.py", env=pg, tree=tree, label=label))
    return rows


REFERENCE = "LangGraph + PostgreSQL checkpointer"


def one_pass(python: str, base_env: dict[str, str], database_url: str, redis_url: str) -> list[dict]:
    """Every peer once, one after another (each its own process, PEERS_RUNS runs): that pass's rows."""
    rows = [
        run(python, "langgraph_peer.py", "none", env=base_env),
        run(python, "langgraph_peer.py", "sqlite", env=base_env),
    ]
    if database_url:
        rows.append(run(python, "langgraph_peer.py", "postgres", env={**base_env, "PEERS_POSTGRES_URL": database_url}))
    rows += atelier_rows(base_env, database_url, redis_url)
    if before := os.environ.get("PEERS_BEFORE_TREE"):  # an older checkout, for before/after in one run
        tree = Path(before).resolve()
        before_env = {**base_env, "ATELIER_VAR_DIR": str(tree / "var" / "bench-peers")}
        rows += atelier_rows(before_env, os.environ.get("PEERS_BEFORE_DATABASE_URL", ""), redis_url, tree, "(before)")
    return rows


def combine(passes: list[list[dict]]) -> list[dict]:
    """One row per framework over the passes: the median of each figure, and the median and range of its
    ratio to LangGraph + PostgreSQL taken pass by pass (each ratio from two peers run minutes apart at most,
    so a machine that slows down or speeds up between passes moves both sides of it)."""
    references = [next((r for r in p if r["framework"] == REFERENCE), None) for p in passes]
    combined = []
    for i, first in enumerate(passes[0]):
        rows = [each[i] for each in passes]  # this framework's row in each pass
        row = {key: first[key] for key in ("framework", "calls", "runs")}
        keys = (
            "baseline_median_ms",
            "framework_median_ms",
            "overhead_per_call_ms",
            "statements_per_call",
            "db_ms_per_call",
        )
        for key in keys:
            if key in first:
                row[key] = statistics.median(r[key] for r in rows)
        if all(references):
            pairs = zip(rows, references, strict=True)
            row["ratios"] = [r["overhead_per_call_ms"] / ref["overhead_per_call_ms"] for r, ref in pairs]
        combined.append(row)
    return combined


def main() -> None:
    python = bench_python()
    database_url = os.environ.get("PEERS_DATABASE_URL", "")
    redis_url = os.environ.get("PEERS_REDIS_URL", "")
    passes = int(os.environ.get("PEERS_PASSES", "3"))
    fake, base_url = start_fake()
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base_env["PEERS_OPENAI_BASE_URL"] = base_url
    try:
        rows = combine([one_pass(python, base_env, database_url, redis_url) for _ in range(passes)])
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    print(f"\nwriter/editor, {rows[0]['calls']} streamed calls per run, {passes} passes of {rows[0]['runs']} runs "
          f"each (median of the passes' medians), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")  # fmt: skip
    print(
        "| framework | baseline run ms | framework run ms | overhead per call "
        "| x LangGraph+PostgreSQL (median of passes; range) | SQL per call | SQL ms per call |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ratios = row.get("ratios")
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
        statements = f"{row['statements_per_call']:.1f}" if "statements_per_call" in row else ""
        database = f"{row['db_ms_per_call']:.1f} ms" if "db_ms_per_call" in row else ""
        print(
            f"| {row['framework']} | {row['baseline_median_ms']:.0f} | {row['framework_median_ms']:.0f} | "
            f"{row['overhead_per_call_ms']:.1f} ms | {ratio} | {statements} | {database} |"
        )


if __name__ == "__main__":
    main()
