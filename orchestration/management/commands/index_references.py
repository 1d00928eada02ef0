"""Chunk reference documents into searchable passages (backfill, or rebuild everything)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from orchestration.models import ReferenceDocument
from orchestration.retrieval import index_references, repair_index


class Command(BaseCommand):
    help = (
        "Chunk reference documents into the passages the retriever searches. By default only references "
        "that have no passages yet are chunked (a backfill: new uploads are chunked when they are added, and "
        "migration 0008 chunked every reference that existed then). --rebuild re-chunks every reference and, "
        "on SQLite, re-creates the full-text index's triggers and rebuilds the index. --session limits it to "
        "one session. --dry-run only counts. Safe to run while the app serves traffic: each reference is "
        "re-chunked in its own transaction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rebuild", action="store_true", help="Re-chunk every reference, not only missing ones.")
        parser.add_argument("--session", type=int, help="Only this session's references (its id).")
        parser.add_argument("--dry-run", action="store_true", help="Count what would be chunked; change nothing.")

    def handle(self, *args: Any, rebuild: bool, session: int | None, dry_run: bool, **options: Any) -> None:
        references = ReferenceDocument.objects.order_by("pk").only("pk", "session_id", "content")
        if session is not None:
            references = references.filter(session_id=session)
        if not rebuild:
            references = references.filter(passages__isnull=True)
        if dry_run:
            self.stdout.write(f"Would chunk {references.count()} reference(s). Nothing changed (dry run).")
            return
        done = passages = 0
        for reference in references.iterator(chunk_size=100):
            with transaction.atomic():
                passages += index_references([reference])
            done += 1
        if rebuild:
            repair_index()
        self.stdout.write(f"Chunked {done} reference(s) into {passages} passage(s).")
