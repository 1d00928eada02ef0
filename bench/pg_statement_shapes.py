"""A turn start's five writes on PostgreSQL in three shapes, timed per transaction (issue 15, fifteenth pass).

The shape of Atelier's turn start (`turns._create_and_reserve`): the session row's fenced UPDATE … RETURNING,
the turn's INSERT, the balance's conditional UPDATE … RETURNING, the ledger entry's INSERT and the events'
INSERT, then COMMIT. Sent three ways with plain psycopg on scratch tables (created and dropped here):
- `sequential`: one round trip per statement, as the engine sends them today;
- `pipelined`: psycopg's pipeline mode (https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html), the
  three independent statements in one round trip, then the two that need their results in another;
- `one WITH`: one statement of data-modifying `WITH` clauses
  (https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING). A refused balance
  writes no turn, ledger entry or event here, but the session row's UPDATE still runs: the engine's own
  statement would also have to leave the event numbers and the lease as they were on a refusal.

Read with care: these narrow tables have no indexes, foreign keys or JSON. Built inside the engine (sixteenth
pass), the turn start as one `WITH` statement cost 1.02 ms against 1.07 ms for its five statements: no gain
(docs/benchmarks.md, "Issue 15, sixteenth pass").

Prints the median and p90 in ms of 400 transactions per shape, three rounds in turn.
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/atelier_bench .venv/bin/python bench/pg_statement_shapes.py
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import psycopg

SESSION = "UPDATE pb_session SET last_seq = last_seq + %s, lease = now() WHERE id = %s RETURNING status, last_seq"
TURN = "INSERT INTO pb_turn (session_id, body) VALUES (%s, %s) RETURNING id"
BALANCE = "UPDATE pb_account SET balance = balance - %s WHERE id = %s AND balance - %s >= 0 RETURNING balance"
ENTRY = "INSERT INTO pb_entry (turn_id, amount, balance_after) VALUES (%s, %s, %s) RETURNING id"
EVENT = "INSERT INTO pb_event (session_id, seq, payload) VALUES (%s, %s, %s) RETURNING id"
ONE_WITH = """
WITH s AS (UPDATE pb_session SET last_seq = last_seq + %s, lease = now() WHERE id = %s RETURNING status, last_seq),
a AS (UPDATE pb_account SET balance = balance - %s
      WHERE id = %s AND balance - %s >= 0 AND EXISTS (SELECT 1 FROM s) RETURNING balance),
t AS (INSERT INTO pb_turn (session_id, body) SELECT %s, %s FROM a RETURNING id),
l AS (INSERT INTO pb_entry (turn_id, amount, balance_after) SELECT t.id, %s, a.balance FROM t, a RETURNING id)
INSERT INTO pb_event (session_id, seq, payload) SELECT %s, s.last_seq, %s FROM s, t RETURNING id
"""
TABLES = {
    "pb_session": "id int PRIMARY KEY, last_seq int, lease timestamptz, status text",
    "pb_turn": "id serial PRIMARY KEY, session_id int, body text",
    "pb_account": "id int PRIMARY KEY, balance bigint",
    "pb_entry": "id serial PRIMARY KEY, turn_id int, amount int, balance_after bigint",
    "pb_event": "id serial PRIMARY KEY, session_id int, seq int, payload jsonb",
}
BODY = "x" * 200
PAYLOAD = '{"kind": "turn_started"}'


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/atelier_bench")
    with psycopg.connect(url, prepare_threshold=5) as conn:
        for name, columns in TABLES.items():
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
        conn.execute("INSERT INTO pb_session VALUES (1, 0, now(), 'running') ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO pb_account VALUES (1, 1000000000) ON CONFLICT DO NOTHING")
        conn.commit()
        try:
            shapes = {"sequential": sequential, "pipelined": pipelined, "one WITH": one_with}
            for _ in range(3):
                for name, shape in shapes.items():
                    print(f"{name:>10}: {timed(conn, shape)}")
        finally:
            conn.rollback()
            for name in TABLES:
                conn.execute(f"DROP TABLE {name}")
            conn.commit()


def timed(conn: psycopg.Connection, shape: Callable[[psycopg.Connection], None]) -> str:
    for _ in range(50):  # warm up: the statements get prepared after prepare_threshold runs
        shape(conn)
    times = []
    for _ in range(400):
        started = time.perf_counter()
        shape(conn)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return f"median {statistics.median(times):.3f} ms, p90 {times[int(len(times) * 0.9)]:.3f} ms"


def sequential(conn: psycopg.Connection) -> None:
    cursor = conn.cursor()
    _, last_seq = cursor.execute(SESSION, (1, 1)).fetchone()
    (turn_id,) = cursor.execute(TURN, (1, BODY)).fetchone()
    (balance,) = cursor.execute(BALANCE, (5, 1, 5)).fetchone()
    cursor.execute(ENTRY, (turn_id, 5, balance)).fetchone()
    cursor.execute(EVENT, (1, last_seq, PAYLOAD)).fetchone()
    conn.commit()


def pipelined(conn: psycopg.Connection) -> None:
    with conn.pipeline():
        session, turn, account = conn.cursor(), conn.cursor(), conn.cursor()
        session.execute(SESSION, (1, 1))
        turn.execute(TURN, (1, BODY))
        account.execute(BALANCE, (5, 1, 5))
        _, last_seq = session.fetchone()
        (turn_id,) = turn.fetchone()
        (balance,) = account.fetchone()
        entry, event = conn.cursor(), conn.cursor()
        entry.execute(ENTRY, (turn_id, 5, balance))
        event.execute(EVENT, (1, last_seq, PAYLOAD))
        entry.fetchone()
        event.fetchone()
    conn.commit()


def one_with(conn: psycopg.Connection) -> None:
    conn.execute(ONE_WITH, (1, 1, 5, 1, 5, 1, BODY, 5, 1, PAYLOAD)).fetchone()
    conn.commit()


if __name__ == "__main__":
    main()
