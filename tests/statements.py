"""Counting the SQL statements a piece of work sends (the query budgets: tests/orchestration/test_query_budget.py,
tests/conversations/test_reply_query_budget.py; docs/benchmarks.md)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper


class Recorder:
    """The statements sent while `on` is true, as (thread name, sql), on every connection and thread.
    Transaction framing (BEGIN, BEGIN IMMEDIATE on SQLite) is not counted: PostgreSQL's driver sends it
    implicitly with the first statement."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str]] = []  # (thread name, sql)
        self.commits: list[str] = []  # the thread name of each transaction committed
        self.lock = threading.Lock()
        self.on = False

    def record(self, sql: str) -> None:
        if self.on and not sql.lstrip().upper().startswith("BEGIN"):
            with self.lock:
                self.statements.append((threading.current_thread().name, sql))


def record_statements(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A Recorder that every statement and every commit of the test passes through (Django's cursor wrapper and
    connection commit patched for the test); it records once its `on` is set."""
    recorder = Recorder()
    original = CursorWrapper._execute_with_wrappers

    def counted(self: CursorWrapper, sql: str, params: Any, many: bool, executor: Any) -> Any:
        recorder.record(sql)
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", counted)
    commit = BaseDatabaseWrapper.commit

    def counted_commit(self: BaseDatabaseWrapper) -> None:
        if recorder.on:
            with recorder.lock:
                recorder.commits.append(threading.current_thread().name)
        commit(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "commit", counted_commit)
    return recorder
