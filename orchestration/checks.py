"""System checks for the engine's settings (run by `manage.py check`, `migrate`, `runserver`, `qcluster`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.db import connections


@register()
def check_db_threads_backend(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """ENGINE_DB_THREADS > 1 needs PostgreSQL: each engine database thread writes on its own connection, and
    SQLite takes one writer at a time (the threads would queue on its write lock, or fail with "database
    is locked" once busy_timeout runs out)."""
    threads = int(settings.ENGINE_DB_THREADS)
    vendor = connections["default"].vendor
    if threads > 1 and vendor != "postgresql":
        return [
            Error(
                f"ENGINE_DB_THREADS is {threads}, but the database is {vendor}: more than one engine database "
                "thread needs PostgreSQL.",
                hint="Unset ENGINE_DB_THREADS (1) with SQLite, or set DATABASE_URL to a PostgreSQL database.",
                id="orchestration.E001",
            )
        ]
    return []
