"""Retrieval over reference documents: chunk them into passages, search them with the database's own
full-text search, behind one small interface a vector store could implement later.

Write side: ``index_references(references)`` chunks references into ``Passage`` rows (called by every
service that adds references; ``manage.py index_references`` backfills or rebuilds). Read side:

    search(query, session=..., k=8)      -> list[RetrievedPassage], best first
    search(query, project=..., k=8)      -> across every session of a project
    search(query, owner=user, k=8)       -> across everything the user owns

Backends (chosen by the database vendor, see ``get_retriever``):
- SQLite: an FTS5 table ``orchestration_passage_fts`` (porter stemming, unicode61, diacritics
  removed) kept in sync with ``orchestration_passage`` by triggers; ranked by bm25 (heading weighted
  2x the text).
- PostgreSQL: a generated ``search_vector tsvector`` column (``english`` configuration, heading weight
  A, text weight B) with a GIN index; ranked by ``ts_rank_cd``.
Both are created by migration 0008. The user's query is never passed to the FTS syntax as written:
it is cut into words (letters and digits), at most MAX_TERMS of them, each quoted, OR-ed together, so
quotes, operators, parentheses, ``NEAR``, ``*``, ``:`` or ``&`` are just text and never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.db import connection
from django.db.models import QuerySet

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from orchestration.models import Passage, Project, ReferenceDocument, WritingSession

# Chunking: passages of about TARGET_CHARS, never over MAX_CHARS, cut at paragraph then sentence
# then word boundaries. ~900 characters is about 200 tokens: eight passages fit any prompt comfortably.
TARGET_CHARS = 900
MAX_CHARS = 1500
MAX_TERMS = 32  # words of a query used for the search (a whole brief can be a query)
MAX_K = 50

_HEADING_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_BLANK_LINES_RE = re.compile(r"\n[ \t]*\n")
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]*\s+")
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Chunk:
    """A passage before it is stored: [start, end) offsets into the reference's content."""

    ordinal: int
    heading: str
    start: int
    end: int


@dataclass(frozen=True)
class RetrievedPassage:
    """One search hit. ``score`` is higher-is-better and only comparable within one search."""

    passage_id: int
    reference_id: int
    reference_title: str
    session_id: int
    ordinal: int
    heading: str
    text: str
    start: int
    end: int
    score: float


# --- chunking ------------------------------------------------------------------------------------


def _paragraphs(content: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph (text between blank lines), whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for sep in [*_BLANK_LINES_RE.finditer(content), None]:
        end = sep.start() if sep else len(content)
        block = content[pos:end]
        stripped = block.strip()
        if stripped:
            lead = len(block) - len(block.lstrip())
            spans.append((pos + lead, pos + lead + len(stripped)))
        pos = sep.end() if sep else len(content)
    return spans


def _split_long(content: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut one over-long paragraph at sentence ends (or spaces, or hard) into pieces <= MAX_CHARS."""
    pieces: list[tuple[int, int]] = []
    while end - start > MAX_CHARS:
        window = content[start : start + MAX_CHARS]
        cut = 0
        for match in _SENTENCE_END_RE.finditer(window):
            if match.end() >= TARGET_CHARS // 2:
                cut = match.end()
                if cut >= TARGET_CHARS:
                    break
        if not cut:
            cut = window.rfind(" ", TARGET_CHARS // 2) + 1 or MAX_CHARS
        piece = content[start : start + cut].rstrip()
        pieces.append((start, start + len(piece)))
        start += cut
        while start < end and content[start].isspace():
            start += 1
    if end > start:
        pieces.append((start, end))
    return pieces


def chunk_text(content: str) -> list[Chunk]:
    """Cut a reference's text into passages: [Chunk(ordinal from 1, heading, start, end)].

    Paragraphs are packed together up to about TARGET_CHARS; a Markdown heading starts a new passage
    and becomes the heading of the passages under it; a paragraph over MAX_CHARS is cut at sentence
    ends. ``content[start:end]`` is the passage's exact text. Pure: no database.
    """
    chunks: list[Chunk] = []
    heading = ""
    current: tuple[int, int] | None = None
    current_heading = ""

    def flush() -> None:
        nonlocal current
        if current is not None:
            chunks.append(Chunk(len(chunks) + 1, current_heading[:200], current[0], current[1]))
            current = None

    for start, end in _paragraphs(content):
        first_line = content[start:end].split("\n", 1)[0]
        match = _HEADING_RE.match(first_line)
        if match:
            flush()
            heading = match.group(2).strip()
        for piece_start, piece_end in _split_long(content, start, end):
            if current is not None and piece_end - current[0] > TARGET_CHARS:
                flush()
            if current is None:
                current, current_heading = (piece_start, piece_end), heading
            else:
                current = (current[0], piece_end)
    flush()
    return chunks


# --- the write side ------------------------------------------------------------------------------


def index_references(references: Iterable[ReferenceDocument]) -> int:
    """(Re)build the passages of ``references`` (ReferenceDocument rows with pk, session_id, content).

    Replaces any passages they had; the full-text index follows by trigger (SQLite) or generated
    column (PostgreSQL). Call it inside the transaction that writes the references. Returns how many
    passages were written.
    """
    from orchestration.models import Passage

    references = [r for r in references if r.pk is not None]
    if not references:
        return 0
    Passage.objects.filter(reference_id__in=[r.pk for r in references]).delete()
    rows = [
        Passage(
            reference_id=ref.pk,
            session_id=ref.session_id,
            ordinal=chunk.ordinal,
            heading=chunk.heading,
            text=ref.content[chunk.start : chunk.end],
            start=chunk.start,
            end=chunk.end,
        )
        for ref in references
        for chunk in chunk_text(ref.content or "")
    ]
    Passage.objects.bulk_create(rows, batch_size=500)
    return len(rows)


# The SQLite index's triggers (the same statements as migration 0008, which keeps its own frozen copy).
SQLITE_INDEX_SQL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS orchestration_passage_fts USING fts5(heading, text, "
    "content='orchestration_passage', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS orchestration_passage_fts_ai AFTER INSERT ON orchestration_passage BEGIN "
    "INSERT INTO orchestration_passage_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS orchestration_passage_fts_ad AFTER DELETE ON orchestration_passage BEGIN "
    "INSERT INTO orchestration_passage_fts(orchestration_passage_fts, rowid, heading, text) "
    "VALUES ('delete', old.id, old.heading, old.text); END",
    "CREATE TRIGGER IF NOT EXISTS orchestration_passage_fts_au AFTER UPDATE ON orchestration_passage BEGIN "
    "INSERT INTO orchestration_passage_fts(orchestration_passage_fts, rowid, heading, text) "
    "VALUES ('delete', old.id, old.heading, old.text); "
    "INSERT INTO orchestration_passage_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END",
    "INSERT INTO orchestration_passage_fts(orchestration_passage_fts) VALUES ('rebuild')",
)


def repair_index() -> None:
    """Re-create the SQLite FTS5 table and triggers if missing and rebuild the index from the passages.

    Needed only if a migration rebuilt orchestration_passage on SQLite (which drops its triggers).
    PostgreSQL's generated column cannot drift; nothing to do there.
    """
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for statement in SQLITE_INDEX_SQL:
            cursor.execute(statement)


# --- the read side -------------------------------------------------------------------------------


# Words that match nearly every passage. OR-ing them in would make any passage a hit (PostgreSQL's
# "english" configuration drops them itself; SQLite's FTS5 has no stop words).
STOP_WORDS = frozenset(
    """a about after all also an and any are as at be been but by can could do does for from had has have how
    i if in into is it its may more most no not of on or our should so some such than that the their them then
    there these they this those to too was we were what when where which who why will with would you your
    write article essay piece brief about words word""".split()  # noqa: SIM905 (a word list reads best as text)
)


def query_terms(query: str) -> list[str]:
    """The words of a query as the search uses them: lowercase letters/digits runs, unique, in order,
    without STOP_WORDS (unless the query has nothing else), at most MAX_TERMS. Everything else (quotes,
    operators, punctuation) is dropped."""
    words: list[str] = []
    for word in _WORD_RE.findall((query or "").lower()):
        if word[:64] not in words:
            words.append(word[:64])
    terms = [w for w in words if w not in STOP_WORDS] or words
    return terms[:MAX_TERMS]


class Retriever(Protocol):
    """What a retrieval backend implements (a vector store would implement this too)."""

    def search(self, query: str, *, scope: QuerySet[Passage], k: int) -> list[tuple[int, float]]:
        """(passage id, score higher-is-better) among the Passage rows of ``scope``, best first, at most k."""


class SQLiteFTS5Retriever:
    def search(self, query: str, *, scope: QuerySet[Passage], k: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        # Each term quoted as an FTS5 string ("" escapes a quote; terms have none), OR-ed.
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        scope_sql, params = scope.values("pk").query.sql_with_params()
        # Only Django-compiled SQL is interpolated (the scope subquery); every value is a parameter.
        # MATERIALIZED: run the MATCH once, then keep the scope's rows. Without it SQLite drives the query
        # from the scope's rowids and runs the full-text match once per passage (measured 600 ms vs 4 ms
        # for 358 passages and a 30-word query; bench/retrieval.py).
        sql = (
            "WITH hits AS MATERIALIZED (SELECT rowid AS id, bm25(orchestration_passage_fts, 2.0, 1.0) AS rank "  # noqa: S608
            "FROM orchestration_passage_fts WHERE orchestration_passage_fts MATCH %s) "
            f"SELECT id, rank FROM hits WHERE id IN ({scope_sql}) ORDER BY rank, id LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [match, *params, k])
            return [(pk, -float(rank)) for pk, rank in cursor.fetchall()]


class PostgresFTSRetriever:
    def search(self, query: str, *, scope: QuerySet[Passage], k: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        # Terms are letters/digits only, quoted as tsquery lexemes: no syntax reaches to_tsquery.
        tsquery = " | ".join(f"'{t}'" for t in terms)
        scope_sql, params = scope.values("pk").query.sql_with_params()
        # Only Django-compiled SQL is interpolated (the scope subquery); every value is a parameter.
        sql = (
            "SELECT p.id, ts_rank_cd(p.search_vector, q) AS rank "  # noqa: S608
            "FROM orchestration_passage p, to_tsquery('english', %s) q "
            f"WHERE p.search_vector @@ q AND p.id IN ({scope_sql}) "
            "ORDER BY rank DESC, p.id LIMIT %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [tsquery, *params, k])
            return [(pk, float(rank)) for pk, rank in cursor.fetchall()]


class ScanRetriever:
    """Fallback for databases without a supported full-text search: counts term hits in Python."""

    def search(self, query: str, *, scope: QuerySet[Passage], k: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        scored = []
        for pk, heading, text in scope.values_list("pk", "heading", "text"):
            words = _WORD_RE.findall(f"{heading} {heading} {text}".lower())
            score = sum(words.count(t) for t in terms)
            if score:
                scored.append((pk, float(score)))
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored[:k]


def get_retriever() -> Retriever:
    """The backend for the default database's vendor."""
    if connection.vendor == "sqlite":
        return SQLiteFTS5Retriever()
    if connection.vendor == "postgresql":
        return PostgresFTSRetriever()
    return ScanRetriever()


def _scope(
    *, session: WritingSession | int | None = None, project: Project | int | None = None, owner: User | None = None
) -> QuerySet[Passage]:
    from orchestration.models import Passage

    if session is None and project is None and owner is None:
        raise ValueError("search() needs a scope: session=, project= or owner=.")
    qs = Passage.objects.all()
    if session is not None:
        qs = qs.filter(session_id=getattr(session, "pk", session))
    if project is not None:
        qs = qs.filter(session__project_id=getattr(project, "pk", project))
    if owner is not None:
        qs = qs.filter(session__project__owner_id=getattr(owner, "pk", owner))
    return qs


def search(
    query: str,
    *,
    session: WritingSession | int | None = None,
    project: Project | int | None = None,
    owner: User | None = None,
    k: int = 8,
) -> list[RetrievedPassage]:
    """The passages best matching ``query`` within a scope, best first, at most ``k`` (1..MAX_K).

    Scope: ``session``, ``project`` and/or ``owner`` (model instances or ids; several narrow it).
    Any string is a valid query: words are matched (stemmed, OR-ed, ranked by relevance), FTS syntax
    characters are ignored; a query with no words returns []. Raises ValueError without a scope.
    """
    k = max(1, min(int(k), MAX_K))
    scope = _scope(session=session, project=project, owner=owner)
    ranked = get_retriever().search(query or "", scope=scope, k=k)
    return hydrate(ranked)


def hydrate(ranked: list[tuple[int, float]]) -> list[RetrievedPassage]:
    """RetrievedPassage rows for [(passage id, score)], in the given order (missing ids skipped)."""
    from orchestration.models import Passage

    rows = {
        p.pk: p
        for p in Passage.objects.filter(pk__in=[pk for pk, _ in ranked])
        .select_related("reference")
        .only("pk", "reference_id", "reference__title", "session_id", "ordinal", "heading", "text", "start", "end")
    }
    return [to_retrieved(rows[pk], score) for pk, score in ranked if pk in rows]


def to_retrieved(passage: Passage, score: float = 0.0) -> RetrievedPassage:
    """A stored Passage (with its reference loaded) as a RetrievedPassage."""
    return RetrievedPassage(
        passage_id=passage.pk,
        reference_id=passage.reference_id,
        reference_title=passage.reference.title,
        session_id=passage.session_id,
        ordinal=passage.ordinal,
        heading=passage.heading,
        text=passage.text,
        start=passage.start,
        end=passage.end,
        score=score,
    )
