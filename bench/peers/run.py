"""One command for the peers table: LangGraph (no checkpointer, SQLite, PostgreSQL) and Atelier (embedded
defaults, PostgreSQL + Redis) on the same writer/editor workload, against one instant fake server.

    .venv/bin/python bench/peers/run.py
    PEERS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/atelier_bench PEERS_REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/python bench/peers/run.py

LangGraph and its checkpointers are pinned in requirements-bench.txt and installed into var/bench-venv
(created on first run), never into the app's venv. Each framework runs in its own process and times the
plain openai SDK loop interleaved with itself as its baseline. Without PEERS_DATABASE_URL the PostgreSQL
rows are skipped. Prints a Markdown table with each row's ratio to LangGraph + PostgreSQL.
PEERS_BEFORE_TREE=<an older checkout> (and PEERS_BEFORE_DATABASE_URL, its own database) adds that tree's
Atelier rows, labelled "(before)", to the same run.
"""

from __future__ import annotations

import json
import os
import re
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
    # raw_decode: another thread of the peer (the mail thread's console email backend) may write right after a
    # line's JSON, before its newline.
    decode = json.JSONDecoder().raw_decode
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result.update(decode(line[7:])[0])
        elif line.startswith("STATEMENTS "):
            result["statements_per_call"] = decode(line[11:])[0]["per_call"]
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


def main() -> None:
    python = bench_python()
    database_url = os.environ.get("PEERS_DATABASE_URL", "")
    redis_url = os.environ.get("PEERS_REDIS_URL", "")
    fake, base_url = start_fake()
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base_env["PEERS_OPENAI_BASE_URL"] = base_url
    rows = []
    try:
        rows.append(run(python, "langgraph_peer.py", "none", env=base_env))
        rows.append(run(python, "langgraph_peer.py", "sqlite", env=base_env))
        if database_url:
            rows.append(
                run(python, "langgraph_peer.py", "postgres", env={**base_env, "PEERS_POSTGRES_URL": database_url})
            )
        rows += atelier_rows(base_env, database_url, redis_url)
        if before := os.environ.get("PEERS_BEFORE_TREE"):  # an older checkout, for before/after in one run
            tree = Path(before).resolve()
            before_env = {**base_env, "ATELIER_VAR_DIR": str(tree / "var" / "bench-peers")}
            rows += atelier_rows(
                before_env, os.environ.get("PEERS_BEFORE_DATABASE_URL", ""), redis_url, tree, "(before)"
            )
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    reference = next((r for r in rows if r["framework"] == "LangGraph + PostgreSQL checkpointer"), None)
    print(f"\nwriter/editor, {rows[0]['calls']} streamed calls per run, median of {rows[0]['runs']} runs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")  # fmt: skip
    print(
        "| framework | baseline run ms | framework run ms | overhead per call | x LangGraph+PostgreSQL | SQL per call |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['overhead_per_call_ms'] / reference['overhead_per_call_ms']:.2f}x" if reference else ""
        statements = f"{row['statements_per_call']:.1f}" if "statements_per_call" in row else ""
        print(
            f"| {row['framework']} | {row['baseline_median_ms']:.0f} | {row['framework_median_ms']:.0f} | "
            f"{row['overhead_per_call_ms']:.1f} ms | {ratio} | {statements} |"
        )


if __name__ == "__main__":
    main()
