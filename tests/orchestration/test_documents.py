"""The document panel: versions, diffs, restore, exports, the human edit, and owner scoping."""

from __future__ import annotations

import io

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from orchestration.models import Agent, DocumentVersion, LLMModel, Project, Status, Turn, WritingSession
from orchestration.versions import record_version

V1 = "# Field notes\n\nThe quick brown fox jumps over the lazy dog.\n"
V2 = "# Field notes\n\nThe quick red fox leaps over the lazy dog.\n\n- first point\n- **bold** and *italic*\n"
V3 = "# Field notes\n\nThe quick red fox leaps over the sleepy dog.\n\n- first point\n- **bold** and *italic*\n"


def make_session(owner, *, status: str = Status.PAUSED, title: str = "Field Notes: a Draft!") -> WritingSession:
    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(project=project, title=title, brief="Write notes.", status=status)
    model, _ = LLMModel.objects.get_or_create(
        provider="demo",
        model_id="demo-documents",
        defaults={"display_name": "Demo writer", "context_window": 100_000},
    )
    agent = Agent.objects.create(session=session, name="Critical editor", model=model, role_prompt="Edit.")
    turn = Turn.objects.create(
        session=session, round=2, agent=agent, agent_name="Critical editor", status=Turn.TurnStatus.COMPLETED
    )
    record_version(session=session, content=V1, note="Starting document")
    record_version(session=session, content=V2, turn=turn, note="Round 2 edit")
    record_version(session=session, content=V3, note="Polish")
    session.refresh_from_db()
    return session


@pytest.fixture
def session(owner) -> WritingSession:
    return make_session(owner)


def url(name: str, session: WritingSession, *args) -> str:
    return reverse(name, args=[session.pk, *args])


def flash(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- The panel ---------------------------------------------------------------------------------


def test_document_page_lists_every_version_with_note_producer_and_change(owner_client, session):
    response = owner_client.get(url("document_page", session))

    assert response.status_code == 200
    html = response.content.decode()
    for number, note in [(1, "Starting document"), (2, "Round 2 edit"), (3, "Polish")]:
        assert f'data-version="{number}"' in html
        assert note in html
    assert "Critical editor" in html and "round 2" in html
    assert "100%" in html  # the first version changes everything
    v3 = session.versions.get(number=3)
    assert f"{v3.change_ratio * 100:.0f}%" in html


def test_document_page_shows_the_current_document_rendered_from_markdown(owner_client, session):
    html = owner_client.get(url("document_page", session)).content.decode()

    assert "<h1>Field notes</h1>" in html
    assert "<strong>bold</strong>" in html and "<em>italic</em>" in html
    assert "sleepy dog" in html


def test_viewing_an_old_version_shows_its_text(owner_client, session):
    response = owner_client.get(url("document_version", session, 1), HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Version 1" in html and "brown fox" in html
    assert "<html" not in html  # an htmx partial, not the page


def test_viewing_a_missing_version_is_404(owner_client, session):
    assert owner_client.get(url("document_version", session, 99)).status_code == 404


# --- Diff --------------------------------------------------------------------------------------


def test_diff_between_two_versions_marks_deleted_and_inserted_words(owner_client, session):
    response = owner_client.get(url("document_diff", session), {"a": 1, "b": 2}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    html = response.content.decode()
    assert "<del>brown</del>" in html and "<ins>red</ins>" in html
    assert "<del>jumps</del>" in html and "<ins>leaps</ins>" in html
    assert "<ins>first</ins>" in html or "first point" in html.split("<ins>", 1)[1]
    assert "v1 → v2" in html
    assert "<html" not in html


def test_diff_side_by_side_puts_old_and_new_lines_in_two_columns(owner_client, session):
    response = owner_client.get(url("document_diff", session), {"a": 2, "b": 3, "mode": "side"})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="diff diff-side"' in html
    assert '<td class="diff-old">The quick red fox leaps over the <del>lazy</del> dog.</td>' in html
    assert '<td class="diff-new">The quick red fox leaps over the <ins>sleepy</ins> dog.</td>' in html


def test_diff_of_a_version_with_itself_says_no_differences(owner_client, session):
    html = owner_client.get(url("document_diff", session), {"a": 2, "b": 2}).content.decode()

    assert "No differences." in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"a": 1, "b": 42}, "This session has no version v42."),
        ({"a": "first", "b": 2}, "Enter a whole number."),
        ({"b": 2}, "This field is required."),
    ],
)
def test_diff_with_bad_versions_is_a_clear_400(owner_client, session, params, message):
    response = owner_client.get(url("document_diff", session), params)

    assert response.status_code == 400
    assert message in response.content.decode()


def test_diff_errors_reach_htmx_requests_too(owner_client, session):
    response = owner_client.get(url("document_diff", session), {"a": 1, "b": 42}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200  # htmx swaps only 2xx
    assert "This session has no version v42." in response.content.decode()


# --- Restore -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PAUSED, Status.STOPPED, Status.COMPLETED, Status.FAILED])
def test_restore_creates_a_new_version_and_updates_the_working_document(owner_client, owner, status):
    session = make_session(owner, status=status)

    response = owner_client.post(url("document_restore", session, 1))

    assert response.status_code == 302
    assert response["Location"] == url("document_page", session)
    newest = session.versions.order_by("-number").first()
    assert newest.number == 4
    assert newest.content == V1
    assert newest.note == "Restored from v1"
    session.refresh_from_db()
    assert session.document == V1
    assert list(session.versions.order_by("number").values_list("content", flat=True)[:3]) == [V1, V2, V3]
    assert flash(response) == ["Restored v1. It is now the working document as v4."]


@pytest.mark.parametrize("status", [Status.RUNNING, Status.QUEUED, Status.PAUSING, Status.STOPPING])
def test_restore_is_refused_while_the_session_runs(owner_client, owner, status):
    session = make_session(owner, status=status)

    response = owner_client.post(url("document_restore", session, 1), follow=True)

    assert session.versions.count() == 3
    session.refresh_from_db()
    assert session.document == V3
    html = response.content.decode()
    assert "Pause or stop it before restoring a version." in html
    assert "Restoring is possible once the session is paused, stopped or finished." in html


def test_restore_returns_to_the_page_the_panel_was_on(owner_client, session):
    response = owner_client.post(url("document_restore", session, 2), {"next": "/dashboard/"})
    assert response["Location"] == "/dashboard/"

    response = owner_client.post(url("document_restore", session, 2), {"next": "https://evil.example/"})
    assert response["Location"] == url("document_page", session)


def test_restore_by_get_is_not_allowed(owner_client, session):
    assert owner_client.get(url("document_restore", session, 1)).status_code == 405
    assert session.versions.count() == 3


# --- Exports -----------------------------------------------------------------------------------


def test_markdown_export_is_the_working_document_as_a_named_md_file(owner_client, session):
    response = owner_client.get(url("document_export", session, "md"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="field-notes-a-draft.md"'
    assert response.content.decode() == V3


def test_html_export_is_a_standalone_sanitized_page(owner_client, session):
    response = owner_client.get(url("document_export", session, "html"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="field-notes-a-draft.html"'
    html = response.content.decode()
    assert html.startswith("<!doctype html>")
    assert "<title>Field Notes: a Draft!</title>" in html
    assert "<h1>Field notes</h1>" in html and "<li><strong>bold</strong> and <em>italic</em></li>" in html
    assert "<style>" in html and "<script" not in html
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_docx_export_keeps_headings_lists_and_emphasis(owner_client, session):
    from docx import Document

    response = owner_client.get(url("document_export", session, "docx"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert response["Content-Disposition"] == 'attachment; filename="field-notes-a-draft.docx"'
    doc = Document(io.BytesIO(response.content))
    paragraphs = [(p.style.name, p.text) for p in doc.paragraphs]
    assert paragraphs == [
        ("Heading 1", "Field notes"),
        ("Normal", "The quick red fox leaps over the sleepy dog."),
        ("List Bullet", "first point"),
        ("List Bullet", "bold and italic"),
    ]
    runs = {run.text: run for run in doc.paragraphs[3].runs}
    assert runs["bold"].bold is True
    assert runs["italic"].italic is True
    assert doc.core_properties.title == "Field Notes: a Draft!"


def test_export_without_a_document_is_refused_with_a_reason_and_the_buttons_are_disabled(owner_client, owner):
    project = Project.objects.create(owner=owner, name="Empty")
    session = WritingSession.objects.create(project=project, title="???", brief="b")

    for fmt in ("md", "html", "docx"):
        response = owner_client.get(url("document_export", session, fmt))
        assert response.status_code == 409  # never a 0-byte file
        assert "no document to export yet" in response.content.decode()
    html = owner_client.get(url("document_page", session)).content.decode()
    assert 'data-testid="export-reason"' in html
    for fmt in ("md", "html", "docx"):
        assert f'data-testid="export-{fmt}" disabled' in html
    assert url("document_export", session, "md") not in html


def test_export_filename_falls_back_to_the_session_number(owner_client, owner):
    project = Project.objects.create(owner=owner, name="Untitled")
    session = WritingSession.objects.create(project=project, title="???", brief="b", document="# Notes\n")
    for fmt in ("md", "html", "docx"):
        response = owner_client.get(url("document_export", session, fmt))
        assert response.status_code == 200
        assert f'filename="session-{session.pk}.{fmt}"' in response["Content-Disposition"]


RICH = """# Report

See [the study](https://example.com/study?id=7) for **details**.

- one
    - one.a
        - one.a.i
- two

1. first
2. second
    1. second.1

| Criterion | Score |
|-----------|-------|
| Clarity | [8](https://example.com/c) |
| Evidence | 7 |

1. again
"""


def test_docx_export_renders_tables_link_urls_and_nested_lists(owner_client, owner):
    from docx import Document
    from docx.oxml.ns import qn

    project = Project.objects.create(owner=owner, name="Reports")
    session = WritingSession.objects.create(project=project, title="Report", brief="b", document=RICH)
    doc = Document(io.BytesIO(owner_client.get(url("document_export", session, "docx")).content))

    # Tables are Word tables (not tab-separated text), with a bold header row.
    assert len(doc.tables) == 1
    table = doc.tables[0]
    assert [[cell.text for cell in row.cells] for row in table.rows] == [
        ["Criterion", "Score"],
        ["Clarity", "8"],
        ["Evidence", "7"],
    ]
    assert all(run.bold for run in table.rows[0].cells[0].paragraphs[0].runs)
    assert not any("\t" in p.text for p in doc.paragraphs)
    # Links keep their URL as real hyperlinks, in the body and in table cells.
    targets = {rel.target_ref for rel in doc.part.rels.values() if rel.is_external}
    assert targets == {"https://example.com/study?id=7", "https://example.com/c"}
    intro = next(p for p in doc.paragraphs if p.text.startswith("See "))
    assert intro.text == "See the study for details."
    assert len(intro._p.findall(qn("w:hyperlink"))) == 1
    # Nested lists keep their depth: a deeper level is indented further, whatever the level.
    items = {p.text: p for p in doc.paragraphs if p.style.name.startswith("List")}
    indents = [items[t].paragraph_format.left_indent for t in ("one", "one.a", "one.a.i")]
    assert indents[0] < indents[1] < indents[2]
    assert items["two"].paragraph_format.left_indent == indents[0]
    assert items["second.1"].paragraph_format.left_indent > items["second"].paragraph_format.left_indent
    # Each numbered list starts again at 1: the list after the table does not continue the first one.

    def num_id(paragraph):
        return paragraph._p.pPr.numPr.numId.val

    assert num_id(items["first"]) == num_id(items["second"])
    assert num_id(items["again"]) != num_id(items["first"])


def test_unknown_export_format_is_404(owner_client, session):
    assert owner_client.get(url("document_export", session, "pdf")).status_code == 404


# --- Human in the loop -------------------------------------------------------------------------


def test_paused_session_offers_the_edit_form_and_running_one_does_not(owner_client, owner):
    paused = make_session(owner, status=Status.PAUSED)
    running = make_session(owner, status=Status.RUNNING)

    assert 'data-testid="human-edit-form"' in owner_client.get(url("document_page", paused)).content.decode()
    html = owner_client.get(url("document_page", running)).content.decode()
    assert 'data-testid="human-edit-form"' not in html
    assert "while the session is paused" in html


def test_human_edit_while_paused_saves_a_version_and_the_note(owner_client, session):
    edited = V3.replace("sleepy", "drowsy").replace("\n", "\r\n")  # as a browser submits a textarea

    response = owner_client.post(url("document_edit", session), {"document": edited, "note": "Keep it short."})

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.document == V3.replace("sleepy", "drowsy")
    assert session.human_note == "Keep it short."
    newest = session.versions.select_related("turn").order_by("-number").first()
    assert newest.number == 4 and newest.turn.kind == Turn.Kind.HUMAN
    assert flash(response) == ["Your edit and note are saved. The next turn will see them."]
    html = owner_client.get(url("document_page", session)).content.decode()
    assert "You (edit)" in html


def test_unchanged_document_from_the_browser_only_saves_the_note(owner_client, session):
    owner_client.post(url("document_edit", session), {"document": V3.replace("\n", "\r\n"), "note": "More verbs."})

    assert session.versions.count() == 3
    session.refresh_from_db()
    assert session.human_note == "More verbs."


def test_human_edit_while_running_shows_the_refusal_and_keeps_the_text(owner_client, owner):
    session = make_session(owner, status=Status.RUNNING)

    response = owner_client.post(url("document_edit", session), {"document": "My rewrite", "note": "n"})

    assert response.status_code == 409
    html = response.content.decode()
    assert "Pause the session before editing the document." in html
    assert "My rewrite" in html
    assert session.versions.count() == 3


def test_human_edit_with_an_oversized_document_is_a_form_error(owner_client, session):
    response = owner_client.post(url("document_edit", session), {"document": "x" * 400_001, "note": ""})

    assert response.status_code == 400
    assert "Ensure this value has at most 400000 characters" in response.content.decode()


# --- Scoping -----------------------------------------------------------------------------------


def document_urls(session: WritingSession) -> list[str]:
    return [
        url("document_page", session),
        url("document_version", session, 1),
        url("document_restore", session, 1),
        url("document_diff", session) + "?a=1&b=2",
        url("document_export", session, "md"),
        url("document_export", session, "html"),
        url("document_export", session, "docx"),
        url("document_edit", session),
    ]


@pytest.mark.parametrize("method", ["get", "post"])
def test_outsider_gets_404_on_every_document_url(client, outsider, session, method):
    client.force_login(outsider)

    for address in document_urls(session):
        response = getattr(client, method)(address, {"document": "pwned", "note": "x"} if method == "post" else None)
        assert response.status_code == 404, address

    assert session.versions.count() == 3
    session.refresh_from_db()
    assert session.document == V3 and session.human_note == ""


def test_anonymous_visitor_is_sent_to_log_in(client, session):
    for address in document_urls(session):
        response = client.get(address)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], address
    assert DocumentVersion.objects.filter(session=session).count() == 3


def test_panel_refreshed_over_htmx_returns_its_forms_to_the_live_page(owner_client, session):
    live_url = f"http://testserver/sessions/{session.pk}/"
    html = owner_client.get(
        url("document_page", session), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=live_url
    ).content.decode()

    assert f'name="next" value="/sessions/{session.pk}/"' in html
    assert f'name="next" value="{url("document_page", session)}"' not in html


def test_document_page_queries_do_not_grow_with_the_number_of_versions(owner_client, owner):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    few = make_session(owner)
    many = make_session(owner)
    editor = Agent.objects.get(session=many)
    for index in range(30):
        turn = Turn.objects.create(session=many, round=3 + index, agent=editor, agent_name=editor.name)
        record_version(session=many, content=f"{V3}\nLine {index}\n", turn=turn, note=f"n{index}")

    owner_client.get(url("document_page", few))  # warm up per-user caches (time zone, session)
    counts = []
    for target in (few, many):
        with CaptureQueriesContext(connection) as queries:
            assert owner_client.get(url("document_page", target)).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_live_session_page_includes_the_document_panel(owner_client, session):
    html = owner_client.get(reverse("session_detail", args=[session.pk])).content.decode()

    assert 'data-testid="document-panel"' in html
    assert "<h1>Field notes</h1>" in html
    assert html.count('data-version="') == 3
    assert f'name="next" value="/sessions/{session.pk}/"' in html  # restore returns to the live page
