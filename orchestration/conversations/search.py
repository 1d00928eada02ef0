"""Full-text search over conversation titles and message text, with the database's own engine.

SQLite: FTS5 tables (porter stemming) kept in sync by triggers (migration 0008). PostgreSQL: GIN indexes
on `to_tsvector('english', ...)` queried with `websearch_to_tsquery` (same migration). Both stem English
words ("sources" finds "source"); SQLite also matches word prefixes as you type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models.expressions import RawSQL

if TYPE_CHECKING:
    from django.apps.registry import Apps
    from django.contrib.auth.models import User
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor

    from orchestration.conversations.models import Message
    from orchestration.models import Project

MAX_QUERY_CHARS = 200
SNIPPET_CHARS = 160

# Schema objects, created by migration 0008 for the running database's vendor.
SQLITE_SCHEMA = [
    "CREATE VIRTUAL TABLE orchestration_message_fts USING fts5("
    "content, content='orchestration_message', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER orchestration_message_fts_ai AFTER INSERT ON orchestration_message BEGIN "
    "INSERT INTO orchestration_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER orchestration_message_fts_ad AFTER DELETE ON orchestration_message BEGIN "
    "INSERT INTO orchestration_message_fts(orchestration_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER orchestration_message_fts_au AFTER UPDATE OF content ON orchestration_message BEGIN "
    "INSERT INTO orchestration_message_fts(orchestration_message_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO orchestration_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE VIRTUAL TABLE orchestration_conversation_fts USING fts5("
    "title, content='orchestration_conversation', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER orchestration_conversation_fts_ai AFTER INSERT ON orchestration_conversation BEGIN "
    "INSERT INTO orchestration_conversation_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER orchestration_conversation_fts_ad AFTER DELETE ON orchestration_conversation BEGIN "
    "INSERT INTO orchestration_conversation_fts(orchestration_conversation_fts, rowid, title) "
    "VALUES ('delete', old.id, old.title); END",
    "CREATE TRIGGER orchestration_conversation_fts_au AFTER UPDATE OF title ON orchestration_conversation BEGIN "
    "INSERT INTO orchestration_conversation_fts(orchestration_conversation_fts, rowid, title) "
    "VALUES ('delete', old.id, old.title); "
    "INSERT INTO orchestration_conversation_fts(rowid, title) VALUES (new.id, new.title); END",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS orchestration_message_fts_ai",
    "DROP TRIGGER IF EXISTS orchestration_message_fts_ad",
    "DROP TRIGGER IF EXISTS orchestration_message_fts_au",
    "DROP TABLE IF EXISTS orchestration_message_fts",
    "DROP TRIGGER IF EXISTS orchestration_conversation_fts_ai",
    "DROP TRIGGER IF EXISTS orchestration_conversation_fts_ad",
    "DROP TRIGGER IF EXISTS orchestration_conversation_fts_au",
    "DROP TABLE IF EXISTS orchestration_conversation_fts",
]
POSTGRES_SCHEMA = [
    "CREATE INDEX orchestration_message_fts ON orchestration_message USING GIN (to_tsvector('english', content))",
    "CREATE INDEX orchestration_conversation_fts ON orchestration_conversation "
    "USING GIN (to_tsvector('english', title))",
]
POSTGRES_DROP = [
    "DROP INDEX IF EXISTS orchestration_message_fts",
    "DROP INDEX IF EXISTS orchestration_conversation_fts",
]


def create_schema(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Migration step: the vendor's full-text objects (other vendors fall back to LIKE, see _ids)."""
    vendor = schema_editor.connection.vendor
    for sql in {"sqlite": SQLITE_SCHEMA, "postgresql": POSTGRES_SCHEMA}.get(vendor, []):
        schema_editor.execute(sql)


def drop_schema(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    vendor = schema_editor.connection.vendor
    for sql in {"sqlite": SQLITE_DROP, "postgresql": POSTGRES_DROP}.get(vendor, []):
        schema_editor.execute(sql)


def restore_sqlite_triggers(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Migration step after changing the message or conversation table's columns: on SQLite, Django adds a
    column by rebuilding the table, which drops its triggers and would leave the FTS tables silently out of
    date. Re-creates the six sync triggers (idempotent; nothing to do on PostgreSQL, whose indexes survive)."""
    if schema_editor.connection.vendor != "sqlite":
        return
    for sql in SQLITE_DROP:
        if sql.startswith("DROP TRIGGER"):
            schema_editor.execute(sql)
    for sql in SQLITE_SCHEMA:
        if sql.startswith("CREATE TRIGGER"):
            schema_editor.execute(sql)


def terms(query: str) -> list[str]:
    """The words of a query (letters and digits), at most 12; punctuation and operators are dropped."""
    return re.findall(r"\w+", query[:MAX_QUERY_CHARS])[:12]


def _match_ids(table: str, column: str, query: str) -> RawSQL | None:
    """A subquery of the ids whose `column` matches every word of `query`, or None if it has no words."""
    words = terms(query)
    if not words:
        return None
    if connection.vendor == "sqlite":
        # Each word quoted (so FTS5 operators in user input are plain text) and prefix-matched.
        expression = " ".join('"' + word.replace('"', "") + '"*' for word in words)
        fts = f"{table}_fts"
        return RawSQL(f"SELECT rowid FROM {fts} WHERE {fts} MATCH %s", [expression])  # noqa: S608, S611 - fixed names
    if connection.vendor == "postgresql":
        sql = f"SELECT id FROM {table} WHERE to_tsvector('english', {column}) @@ websearch_to_tsquery('english', %s)"  # noqa: S608 - fixed names
        return RawSQL(sql, [" ".join(words)])  # noqa: S611 - the query is a parameter
    like = " AND ".join([f"{column} LIKE %s"] * len(words))
    return RawSQL(f"SELECT id FROM {table} WHERE {like}", [f"%{w}%" for w in words])  # noqa: S608, S611


@dataclass(frozen=True)
class Hit:
    """One search result: the conversation, and the message that matched (None: the title matched)."""

    conversation_id: int
    title: str
    project_id: int
    project_name: str
    message_id: int | None
    snippet: str
    agent_name: str


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """A plain-text window of `text` around the first word of `query` it contains (the page escapes it)."""
    lowered = text.lower()
    at = -1
    for word in terms(query):
        at = lowered.find(word.lower()[:5])  # the stem's start: "sources" finds "source"
        if at >= 0:
            break
    start = max(0, at - width // 3) if at >= 0 else 0
    piece = " ".join(text[start : start + width].split())
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def search(*, user: User, query: str, project: Project | None = None, limit: int = 50) -> list[Hit]:
    """Conversations of `user` (optionally one project's) whose title or visible messages match `query`.

    Every word must match (English stemming; prefixes on SQLite). Title matches come first, then
    message matches, newest first, at most one hit per message and `limit` in all. Superseded messages
    (regenerated or edited away) are not searched. Returns [] for a query without words.
    """
    from orchestration.conversations.models import Conversation, Message

    conversations = Conversation.objects.filter(project__owner=user, project__archived_at__isnull=True)
    if project is not None:
        conversations = conversations.filter(project=project)
    title_ids = _match_ids("orchestration_conversation", "title", query)
    message_ids = _match_ids("orchestration_message", "content", query)
    if title_ids is None or message_ids is None:
        return []
    hits: list[Hit] = []
    for conversation in conversations.filter(pk__in=title_ids).select_related("project")[:limit]:
        hits.append(
            Hit(conversation.pk, conversation.title, conversation.project_id, conversation.project.name, None, "", "")
        )
    messages = (
        Message.objects.filter(pk__in=message_ids, superseded=False, conversation__in=conversations)
        .select_related("conversation__project")
        .order_by("-created_at")[: max(0, limit - len(hits))]
    )
    for message in messages:
        conversation = message.conversation
        hits.append(
            Hit(
                conversation.pk,
                conversation.title,
                conversation.project_id,
                conversation.project.name,
                message.pk,
                snippet(message.content, query),
                message.agent_name,
            )
        )
    return hits


def search_messages(*, conversation_id: int, query: str, limit: int = 5) -> list[Message]:
    """Visible messages of one conversation whose text matches every word of `query`, newest first."""
    from orchestration.conversations.models import Message

    ids = _match_ids("orchestration_message", "content", query)
    if ids is None:
        return []
    return list(
        Message.objects.filter(pk__in=ids, conversation_id=conversation_id, superseded=False)
        .exclude(role="tool")
        .order_by("-position")[:limit]
    )
