"""The retriever: references are chunked into passages when added and searched with the database's own
full-text search (SQLite FTS5 here; PostgreSQL full-text search when DATABASE_URL points at PostgreSQL:
CI runs this file on both). Hostile queries never error."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from orchestration import retrieval, services
from orchestration.models import Passage, Project, ReferenceDocument, WritingSession
from orchestration.retrieval import MAX_CHARS, chunk_text, search
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

TREES = """# Urban trees

Street trees cool the pavement by several degrees in summer. Shade from a mature canopy lowers
surface temperatures and the energy spent on air conditioning.

## Storm water

A tree's roots and crown slow storm water, so drains overflow less often during heavy rain.

## Costs

Planting costs are modest; the larger cost is watering young trees for their first three years.
"""

BIKES = """# Cycling infrastructure

Protected bike lanes reduce injuries to cyclists. Painted lanes without separation do far less.

Cities that built connected networks saw cycling trips double within five years.
"""


def _session(owner, title="Trees"):
    project = Project.objects.create(owner=owner, name=f"P {title}")
    return WritingSession.objects.create(project=project, title=title, brief="Write.")


def _add(session, owner, *docs):
    services.add_references(session=session, user=owner, items=[(title, text, f"{title}.md") for title, text in docs])


# --- chunking ------------------------------------------------------------------------------------


def test_chunks_are_exact_slices_with_their_heading():
    chunks = chunk_text(TREES)
    assert [c.ordinal for c in chunks] == list(range(1, len(chunks) + 1))
    assert [c.heading for c in chunks] == ["Urban trees", "Storm water", "Costs"]
    assert TREES[chunks[1].start : chunks[1].end].startswith("## Storm water")
    assert "drains overflow" in TREES[chunks[1].start : chunks[1].end]
    for chunk in chunks:
        text = TREES[chunk.start : chunk.end]
        assert text == text.strip() and text


def test_a_long_paragraph_is_cut_at_sentence_ends_and_nothing_is_lost():
    sentence = "Shade lowers the temperature of the street by a few degrees. "
    long_text = sentence * 120  # ~7,300 characters, one paragraph
    chunks = chunk_text(long_text)
    assert len(chunks) >= 5
    assert all(c.end - c.start <= MAX_CHARS for c in chunks)
    # Every passage but the last ends at a sentence end, and the pieces cover the text in order.
    assert all(long_text[c.start : c.end].endswith(".") for c in chunks)
    joined = " ".join(long_text[c.start : c.end] for c in chunks)
    assert joined == long_text.strip()


def test_text_with_no_spaces_or_sentences_is_still_cut_under_the_limit():
    chunks = chunk_text("x" * 5000)
    assert all(c.end - c.start <= MAX_CHARS for c in chunks)
    assert sum(c.end - c.start for c in chunks) == 5000


# --- indexing and search -------------------------------------------------------------------------


def test_added_references_are_chunked_and_found_by_meaning_words(owner):
    session = _session(owner)
    _add(session, owner, ("Trees", TREES), ("Bikes", BIKES))
    assert Passage.objects.filter(session=session).count() == len(chunk_text(TREES)) + len(chunk_text(BIKES))

    hits = search("What happens to storm drains when it rains?", session=session, k=3)
    assert hits, "the storm-water passage should match"
    assert hits[0].heading == "Storm water"
    assert hits[0].reference_title == "Trees"
    reference = ReferenceDocument.objects.get(pk=hits[0].reference_id)
    assert reference.content[hits[0].start : hits[0].end] == hits[0].text

    # Stemming: "cyclist injury" finds "injuries to cyclists".
    bike = search("cyclist injury", session=session, k=1)
    assert bike and bike[0].reference_title == "Bikes"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_is_scoped_to_the_session_project_or_owner(owner):
    other = make_user("other@example.com")
    mine = _session(owner, "Mine")
    theirs = _session(other, "Theirs")
    _add(mine, owner, ("Trees", TREES))
    _add(theirs, other, ("Bikes", BIKES), ("Trees too", TREES))

    assert {h.session_id for h in search("trees shade", session=mine, k=20)} == {mine.pk}
    assert search("bike lanes", session=mine) == []
    assert {h.session_id for h in search("trees", project=mine.project, k=20)} == {mine.pk}
    assert {h.session_id for h in search("trees", owner=owner, k=20)} == {mine.pk}
    assert {h.session_id for h in search("trees", owner=other, k=20)} == {theirs.pk}
    with pytest.raises(ValueError):
        search("trees")


HOSTILE_QUERIES = [
    "",
    "   ",
    '"',
    '"unbalanced quote',
    "'; DROP TABLE orchestration_passage; --",
    "trees AND OR NOT",
    "NEAR(trees storm, 2)",
    "tree*",
    "*",
    "heading:storm",
    "text : water",
    "(storm OR",
    "-trees",
    "^trees",
    "trees & | ! <-> :*",
    "storm:* & !water",
    "\x00storm",
    "🌳 trees 🌧️",
    "Bäume und Stürme",
    "a " * 5000,
    "storm " * 500,
    "{}[]\\/%_",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_hostile_queries_never_error(owner, query):
    session = _session(owner)
    _add(session, owner, ("Trees", TREES))
    hits = search(query, session=session, k=5)
    assert len(hits) <= 5
    assert all(h.session_id == session.pk for h in hits)
    if "storm" in query.lower():
        assert hits and hits[0].heading == "Storm water"


def test_deleting_a_reference_removes_its_passages_from_search(owner):
    session = _session(owner)
    _add(session, owner, ("Trees", TREES), ("Bikes", BIKES))
    ReferenceDocument.objects.filter(session=session, title="Bikes").delete()
    assert search("cyclists lanes", session=session) == []
    assert search("storm water", session=session)


def test_k_is_clamped(owner):
    session = _session(owner)
    _add(session, owner, ("Trees", TREES))
    assert len(search("trees storm costs water shade", session=session, k=0)) == 1
    assert len(search("trees storm costs water shade", session=session, k=10_000)) == 3


def test_duplicated_session_has_its_own_searchable_passages(owner):
    from orchestration.presets import duplicate_session

    session = _session(owner)
    _add(session, owner, ("Trees", TREES))
    copy = duplicate_session(session=session)
    hits = search("storm water", session=copy)
    assert hits and hits[0].session_id == copy.pk


def test_backfill_command_chunks_references_that_have_none(owner):
    session = _session(owner)
    # A reference written before the retriever existed: no passages.
    ReferenceDocument.objects.create(session=session, title="Old", content=TREES)
    assert search("storm", session=session) == []
    call_command("index_references", "--dry-run", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert search("storm", session=session) == []
    call_command("index_references", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert search("storm", session=session)[0].heading == "Storm water"
    # Running it again changes nothing; --rebuild re-chunks to the same passages.
    before = list(Passage.objects.filter(session=session).values_list("ordinal", "start", "end"))
    call_command("index_references", "--rebuild", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert list(Passage.objects.filter(session=session).values_list("ordinal", "start", "end")) == before
    assert search("storm", session=session)[0].heading == "Storm water"


def test_the_backend_is_the_databases_own_full_text_search():
    backend = retrieval.get_retriever()
    expected = {"sqlite": retrieval.SQLiteFTS5Retriever, "postgresql": retrieval.PostgresFTSRetriever}
    assert isinstance(backend, expected[connection.vendor])
