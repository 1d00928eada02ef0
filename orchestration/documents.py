"""The document panel's logic: diffs between versions, restore, and exports (Markdown, HTML, .docx).

Every path that turns model text into HTML goes through nh3: render_markdown for the document
itself, and a diff-specific nh3 pass for the diff view (which escapes every token first anyway).
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Literal

import nh3
from django.db import transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

from orchestration.matching import BoundedMatcher, deadline_in
from orchestration.models import DocumentVersion, Status, WritingSession
from orchestration.rendering import render_markdown
from orchestration.versions import record_version

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from docx.text.paragraph import Paragraph

# Restoring rewrites the working document; while an agent is writing it, that would race the engine.
RESTORE_ALLOWED_STATUSES = frozenset({Status.DRAFT, Status.PAUSED, Status.STOPPED, Status.COMPLETED, Status.FAILED})

# SequenceMatcher is quadratic in the worst case; past this many tokens per side we diff by lines only.
_MAX_WORD_DIFF_TOKENS = 20_000

DIFF_MODES = ("inline", "side")


class DocumentError(Exception):
    """A refusal the UI shows to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def current_document(session: WritingSession) -> str:
    """The text the panel shows and exports: the working document, else the final one."""
    return session.document or session.final_document or ""


def versions_for_panel(session: WritingSession) -> QuerySet[DocumentVersion]:
    """Versions for the list, with the producing turn in the same query and without their (large) content."""
    return session.versions.select_related("turn").defer("content").order_by("number")


def can_restore(session: WritingSession) -> bool:
    return session.status in RESTORE_ALLOWED_STATUSES


# --- Diff ------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\s+|[^\s]+")

# The diff builds its HTML from escaped tokens with format_html; nh3 runs over the result as a second
# line of defence, with only the handful of tags and classes the diff itself produces.
_DIFF_TAGS = {"div", "table", "colgroup", "col", "thead", "tbody", "tr", "th", "td", "ins", "del", "span", "p"}
_DIFF_CLASSES = {
    "div": {"diff", "diff-inline", "diff-side", "diff-empty"},
    "table": {"diff-table"},
    "tr": {"diff-equal", "diff-insert", "diff-delete", "diff-replace"},
    "td": {"diff-old", "diff-new", "diff-num"},
    "th": {"diff-num"},
    "span": {"diff-gap"},
}


def _sanitize_diff(html: str) -> SafeString:
    cleaned = nh3.clean(
        html,
        tags=_DIFF_TAGS,
        attributes={"th": {"scope"}},
        allowed_classes=_DIFF_CLASSES,
        url_schemes=set(),
        strip_comments=True,
        link_rel=None,
    )
    return mark_safe(cleaned)  # noqa: S308 - sanitized by nh3 just above


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _word_opcodes(
    old: list[str], new: list[str], deadline: float | None = None
) -> list[tuple[Literal["replace", "delete", "insert", "equal"], int, int, int, int]]:
    if len(old) > _MAX_WORD_DIFF_TOKENS or len(new) > _MAX_WORD_DIFF_TOKENS:
        return [("replace", 0, len(old), 0, len(new))] if old != new else [("equal", 0, len(old), 0, len(new))]
    # One time budget per diff (see matching.py): a long document never pins a web worker for minutes.
    return BoundedMatcher(old, new, deadline=deadline).get_opcodes()


def _inline_html(a: str, b: str, deadline: float | None = None) -> SafeString:
    """One text with deletions in <del> and insertions in <ins>, word by word."""
    old, new = _tokens(a), _tokens(b)
    parts: list[SafeString] = []
    for tag, i1, i2, j1, j2 in _word_opcodes(old, new, deadline):
        if tag == "equal":
            parts.append(escape("".join(old[i1:i2])))
            continue
        if tag in ("delete", "replace"):
            parts.append(format_html("<del>{}</del>", "".join(old[i1:i2])))
        if tag in ("insert", "replace"):
            parts.append(format_html("<ins>{}</ins>", "".join(new[j1:j2])))
    return mark_safe("".join(parts))  # noqa: S308 - every part was escaped above


def _side_cells(old_line: str, new_line: str, deadline: float | None = None) -> tuple[SafeString, SafeString]:
    """A changed line pair, with the words that differ marked on each side."""
    old, new = _tokens(old_line), _tokens(new_line)
    left: list[SafeString] = []
    right: list[SafeString] = []
    for tag, i1, i2, j1, j2 in _word_opcodes(old, new, deadline):
        old_text, new_text = "".join(old[i1:i2]), "".join(new[j1:j2])
        if tag == "equal":
            left.append(escape(old_text))
            right.append(escape(new_text))
            continue
        if old_text:
            left.append(format_html("<del>{}</del>", old_text))
        if new_text:
            right.append(format_html("<ins>{}</ins>", new_text))
    return mark_safe("".join(left)), mark_safe("".join(right))  # noqa: S308 - parts escaped above


def _side_rows(
    a: str, b: str, deadline: float | None = None
) -> list[tuple[str, str, SafeString | str, str, SafeString | str]]:
    """(row class, old line number, old cell, new line number, new cell) for a two-column table."""
    old_lines, new_lines = a.splitlines(), b.splitlines()
    rows: list[tuple[str, str, SafeString | str, str, SafeString | str]] = []
    matcher = BoundedMatcher(old_lines, new_lines, deadline=deadline)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                line = old_lines[i1 + offset]
                rows.append(("diff-equal", str(i1 + offset + 1), line, str(j1 + offset + 1), line))
            continue
        span = max(i2 - i1, j2 - j1)
        for offset in range(span):
            i, j = i1 + offset, j1 + offset
            old_line = old_lines[i] if i < i2 else None
            new_line = new_lines[j] if j < j2 else None
            if old_line is not None and new_line is not None:
                left, right = _side_cells(old_line, new_line, deadline)
                rows.append(("diff-replace", str(i + 1), left, str(j + 1), right))
            elif old_line is not None:
                rows.append(("diff-delete", str(i + 1), format_html("<del>{}</del>", old_line), "", ""))
            else:
                rows.append(("diff-insert", "", "", str(j + 1), format_html("<ins>{}</ins>", new_line)))
    return rows


def diff_versions(a: str, b: str, *, mode: str = "inline") -> SafeString:
    """HTML showing what changed from text a to text b: <del> for removed words, <ins> for added ones.

    The texts are shown as their Markdown source (escaped), so a diff never renders model HTML.
    """
    a, b = a or "", b or ""
    if a == b:
        return _sanitize_diff(str(format_html('<div class="diff diff-empty"><p>{}</p></div>', "No differences.")))
    if mode == "side":
        body = format_html_join(
            "",
            '<tr class="{}"><td class="diff-num">{}</td><td class="diff-old">{}</td>'
            '<td class="diff-num">{}</td><td class="diff-new">{}</td></tr>',
            _side_rows(a, b, deadline_in()),
        )
        html = format_html(
            '<div class="diff diff-side"><table class="diff-table"><thead><tr>'
            '<th class="diff-num" scope="col">#</th><th scope="col">{}</th>'
            '<th class="diff-num" scope="col">#</th><th scope="col">{}</th>'
            "</tr></thead><tbody>{}</tbody></table></div>",
            "Before",
            "After",
            body,
        )
    else:
        html = format_html('<div class="diff diff-inline">{}</div>', _inline_html(a, b, deadline_in()))
    return _sanitize_diff(str(html))


def diff_stats(a: str, b: str) -> dict[str, int]:
    """Words added and removed, for the summary above the diff."""
    old, new = (a or "").split(), (b or "").split()
    added = removed = 0
    for tag, i1, i2, j1, j2 in _word_opcodes(old, new):
        if tag in ("delete", "replace"):
            removed += i2 - i1
        if tag in ("insert", "replace"):
            added += j2 - j1
    return {"added": added, "removed": removed}


# --- Restore ---------------------------------------------------------------------------------------


def restore_version(*, session: WritingSession, version: DocumentVersion) -> DocumentVersion:
    """Make an old version the working document again, as a new version (history is never rewritten)."""
    if version.session_id != session.pk:
        raise DocumentError("That version belongs to another session.")
    with transaction.atomic():
        # Re-read the status under a row lock so a run that starts right now cannot race the restore.
        status = WritingSession.objects.select_for_update().values_list("status", flat=True).get(pk=session.pk)
        session.status = status
        if status not in RESTORE_ALLOWED_STATUSES:
            raise DocumentError(
                f"This session is {session.get_status_display().lower()}. Pause or stop it before restoring a version."
            )
        return record_version(session=session, content=version.content, note=f"Restored from v{version.number}")


# --- Exports ---------------------------------------------------------------------------------------


def export_filename(session: WritingSession, extension: str) -> str:
    base = slugify(session.title)[:80].strip("-") or f"session-{session.pk}"
    return f"{base}.{extension}"


def export_markdown(session: WritingSession) -> str:
    text = current_document(session)
    return text if text.endswith("\n") or not text else text + "\n"


def export_html(session: WritingSession) -> str:
    """A standalone HTML file: the sanitized document with a small embedded stylesheet and no scripts."""
    return render_to_string(
        "orchestration/documents/export.html",
        {"title": session.title, "body": render_markdown(current_document(session))},
    )


LIST_INDENT_CM = 0.63  # Word's own step between list levels


def _add_hyperlink(paragraph: Paragraph, url: str, text: str, *, bold: bool, italic: bool) -> None:
    """A real Word hyperlink (python-docx has no API for one): an external relationship + w:hyperlink."""
    from docx.opc.constants import RELATIONSHIP_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    rel_id = paragraph.part.relate_to(url, RELATIONSHIP_TYPE.HYPERLINK, is_external=True)
    link = OxmlElement("w:hyperlink")
    link.set(qn("r:id"), rel_id)
    run = OxmlElement("w:r")
    props = OxmlElement("w:rPr")
    color = OxmlElement("w:color")
    color.set(qn("w:val"), "0563C1")
    underline = OxmlElement("w:u")
    underline.set(qn("w:val"), "single")
    props.extend([color, underline])
    for flag, tag in ((bold, "w:b"), (italic, "w:i")):
        if flag:
            props.append(OxmlElement(tag))
    run.append(props)
    node = OxmlElement("w:t")
    node.text = text
    node.set(qn("xml:space"), "preserve")
    run.append(node)
    link.append(run)
    paragraph._p.append(link)


class _DocxBuilder(HTMLParser):
    """Walks the sanitized HTML of the document and writes python-docx paragraphs, runs and tables.

    Headings, paragraphs, quotes, code blocks, bold, italic and inline code; links as real hyperlinks
    (their URL kept); bullet and numbered lists nested to any depth (indented one step per level, each
    numbered list restarting at 1); tables as Word tables with a bold header row.
    """

    def __init__(self, document: DocxDocument) -> None:
        super().__init__(convert_charrefs=True)
        self.doc = document
        self.paragraph: Paragraph | None = None
        self.style: str | None = None
        self.lists: list[dict[str, Any]] = []  # {"kind": "ul"|"ol", "num_id": int | None}
        self.bold = self.italic = self.code = 0
        self.in_pre = False
        self.in_quote = 0
        self.heading_level: int | None = None
        self.link: str | None = None
        # Tables are collected, then written at </table>: rows of cells of runs (text, bold, italic, link).
        self.table: list[list[list[tuple[str, bool, bool, str | None]]]] | None = None
        self.header_rows = 0
        self.in_head = False
        self.cell: list[tuple[str, bool, bool, str | None]] | None = None

    # Paragraphs are created lazily, on the first text, so empty tags leave no empty paragraphs.
    def _ensure_paragraph(self) -> Paragraph:
        if self.paragraph is None:
            if self.heading_level is not None:
                self.paragraph = self.doc.add_heading(level=min(self.heading_level, 9))
            else:
                self.paragraph = self.doc.add_paragraph(style=self._current_style())
                if self.style and self.lists:
                    self._format_list_item(self.paragraph)
        return self.paragraph

    def _format_list_item(self, paragraph: Paragraph) -> None:
        from docx.shared import Cm

        depth = len(self.lists)
        paragraph.paragraph_format.left_indent = Cm(LIST_INDENT_CM * (depth + 1))
        current = self.lists[-1]
        if current["kind"] != "ol":
            return
        if current["num_id"] is None:
            current["num_id"] = self._restarted_num(paragraph)
        if current["num_id"] is not None:
            num_pr = paragraph._p.get_or_add_pPr().get_or_add_numPr()
            num_pr.get_or_add_numId().val = current["num_id"]
            num_pr.get_or_add_ilvl().val = 0

    def _restarted_num(self, paragraph: Paragraph) -> int | None:
        """A new numbering instance of the list style's definition that starts at 1 (each <ol> restarts)."""
        if paragraph.style is None:
            return None  # no list style: the style's own numbering
        try:
            style_num = paragraph.style.element.pPr.numPr.numId.val
            numbering = self.doc.part.numbering_part.element
            abstract_id = numbering.num_having_numId(style_num).abstractNumId.val
            num = numbering.add_num(abstract_id)
            num.add_lvlOverride(ilvl=0).add_startOverride(1)
            num_id: int = num.numId
            return num_id
        except (AttributeError, KeyError):  # a template without list numbering: the style's own numbering
            return None

    def _list_style(self) -> str:
        kind = self.lists[-1]["kind"] if self.lists else "ul"
        depth = min(len(self.lists), 3)
        base = "List Bullet" if kind == "ul" else "List Number"
        return base if depth <= 1 else f"{base} {depth}"

    def _current_style(self) -> str | None:
        if self.style:
            return self.style
        if self.in_quote:
            return "Quote"
        return None

    def _close(self) -> None:
        self.paragraph = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.table is not None and tag not in ("table",):
            self._table_start(tag, dict(attrs))
            return
        if tag in ("ul", "ol"):
            self._close()
            self.lists.append({"kind": tag, "num_id": None})
        elif tag == "li":
            self._close()
            self.style = self._list_style()
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._close()
            self.heading_level = int(tag[1])
        elif tag == "blockquote":
            self._close()
            self.in_quote += 1
        elif tag == "pre":
            self._close()
            self.in_pre = True
        elif tag in ("p", "div"):
            # A <p> inside a list item continues that item's paragraph style.
            self._close()
        elif tag == "table":
            self._close()
            self.table, self.header_rows = [], 0
        elif tag == "hr":
            self._close()
            self.doc.add_paragraph("\u2014" * 3)
        elif tag == "a":
            self.link = dict(attrs).get("href") or None
        elif tag in ("strong", "b"):
            self.bold += 1
        elif tag in ("em", "i"):
            self.italic += 1
        elif tag == "code":
            self.code += 1
        elif tag == "br" and self.paragraph is not None:
            self.paragraph.add_run().add_break()

    def _table_start(self, tag: str, attrs: dict[str, Any]) -> None:
        assert self.table is not None, "called only inside a <table> (handle_starttag checks)"
        if tag == "thead":
            self.in_head = True
        elif tag == "tr":
            self.table.append([])
            if self.in_head:
                self.header_rows += 1
        elif tag in ("td", "th"):
            if not self.table:
                self.table.append([])
            self.cell = []
            self.table[-1].append(self.cell)
        elif tag == "a":
            self.link = attrs.get("href") or None
        elif tag in ("strong", "b", "th"):
            self.bold += 1
        elif tag in ("em", "i"):
            self.italic += 1
        elif tag == "br" and self.cell is not None:
            self.cell.append(("\n", False, False, None))

    def handle_endtag(self, tag: str) -> None:
        if self.table is not None:
            if tag == "table":
                self._write_table()
            elif tag == "thead":
                self.in_head = False
            elif tag in ("td", "th"):
                self.cell = None
                if tag == "th":
                    self.bold = max(0, self.bold - 1)
            elif tag == "a":
                self.link = None
            elif tag in ("strong", "b"):
                self.bold = max(0, self.bold - 1)
            elif tag in ("em", "i"):
                self.italic = max(0, self.italic - 1)
            return
        if tag in ("ul", "ol"):
            self._close()
            if self.lists:
                self.lists.pop()
            self.style = self._list_style() if self.lists else None  # back in the outer item
        elif tag == "li":
            self._close()
            self.style = self._list_style() if len(self.lists) > 1 else None
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._close()
            self.heading_level = None
        elif tag == "blockquote":
            self._close()
            self.in_quote = max(0, self.in_quote - 1)
        elif tag == "pre":
            self._close()
            self.in_pre = False
        elif tag in ("p", "div"):
            self._close()
        elif tag == "a":
            self.link = None
        elif tag in ("strong", "b"):
            self.bold = max(0, self.bold - 1)
        elif tag in ("em", "i"):
            self.italic = max(0, self.italic - 1)
        elif tag == "code":
            self.code = max(0, self.code - 1)

    def _write_table(self) -> None:
        rows = [row for row in (self.table or []) if row]
        self.table, self.cell = None, None
        if not rows:
            return
        columns = max(len(row) for row in rows)
        table = self.doc.add_table(rows=len(rows), cols=columns)
        try:
            table.style = "Table Grid"
        except (KeyError, ValueError):  # a template without it keeps the default look
            pass
        for r, row in enumerate(rows):
            for c, runs in enumerate(row):
                paragraph = table.cell(r, c).paragraphs[0]
                for text, bold, italic, link in runs:
                    if text == "\n":
                        paragraph.add_run().add_break()
                    elif link:
                        _add_hyperlink(paragraph, link, text, bold=bold or r < self.header_rows, italic=italic)
                    else:
                        run = paragraph.add_run(text)
                        run.bold = (bold or r < self.header_rows) or None
                        run.italic = italic or None
        self._close()

    def handle_data(self, data: str) -> None:
        if self.table is not None:
            if self.cell is not None:
                data = re.sub(r"\s+", " ", data)
                if not self.cell:
                    data = data.lstrip()
                if data:
                    self.cell.append((data, bool(self.bold), bool(self.italic), self.link))
            return
        if not self.in_pre:
            data = re.sub(r"\s+", " ", data)
            if self.paragraph is None:
                data = data.lstrip()
            if not data:
                return
        elif self.paragraph is None:
            data = data.strip("\n")
            if not data:
                return
        paragraph = self._ensure_paragraph()
        if self.link and not self.in_pre:
            _add_hyperlink(paragraph, self.link, data, bold=bool(self.bold), italic=bool(self.italic))
            return
        lines = data.split("\n") if self.in_pre else [data]
        for index, line in enumerate(lines):
            if index:
                paragraph.add_run().add_break()
            run = paragraph.add_run(line)
            run.bold = bool(self.bold) or None
            run.italic = bool(self.italic) or None
            if self.code or self.in_pre:
                run.font.name = "Courier New"


def export_docx(session: WritingSession) -> bytes:
    from docx import Document  # imported lazily: python-docx pulls lxml, only exports need it

    document = Document()
    document.core_properties.title = session.title[:255]
    builder = _DocxBuilder(document)
    builder.feed(str(render_markdown(current_document(session))))
    builder.close()
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()
