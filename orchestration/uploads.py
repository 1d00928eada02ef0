"""Reference document uploads: .md, .txt and .docx turned into plain text, with clear refusals.

Every format is read under hard bounds so a small hostile file cannot pin a web process or eat
its memory (issue 9, cases 1-2):

- the upload itself: at most MAX_UPLOAD_BYTES, read with a cap (never trusting ``upload.size``);
- a .docx is a zip archive: its entry count and declared uncompressed sizes are checked before
  anything is decompressed, and each XML part is decompressed in chunks with a hard byte cap
  (declared sizes can lie);
- the XML is parsed incrementally (lxml's pull parser, no DTDs, no entities, no network), each
  paragraph is released as soon as its text is taken, and the parse stops at DOCX_MAX_PARAGRAPHS,
  at MAX_REFERENCE_CHARS of text, or after DOCX_MAX_PARSE_SECONDS of CPU time.

With these bounds the worst case is well under a second of CPU and a few MB of memory, so the
parse stays in the request (no task queue round-trip for the user to wait on).
"""

from __future__ import annotations

import io
import itertools
import posixpath
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from django.core.files.uploadedfile import UploadedFile

MAX_UPLOAD_BYTES = 1024 * 1024  # 1 MB per file
MAX_UPLOAD_FILES = 10  # per request
MAX_REFERENCE_CHARS = 200_000  # what a reference may hold once extracted (a .docx can expand a lot)
ALLOWED_EXTENSIONS = (".md", ".markdown", ".txt", ".docx")

# .docx (zip) bounds. A real document of 1 MB has tens of entries and a document.xml of a few MB.
DOCX_MAX_ENTRIES = 1000
DOCX_MAX_DECLARED_BYTES = 50 * 1024 * 1024  # sum of the archive's declared uncompressed sizes
DOCX_MAX_PART_BYTES = 16 * 1024 * 1024  # one XML part, decompressed (enforced while streaming)
DOCX_MAX_PARAGRAPHS = 20_000  # empty ones included: they cost parse time, not text
DOCX_MAX_PARSE_SECONDS = 1.0  # CPU time for one file
_CHUNK = 64 * 1024

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_OFFICE_DOCUMENT = "/officeDocument"


class UploadError(Exception):
    """A file we refuse; the message names the file and says why."""


@dataclass(frozen=True)
class ParsedUpload:
    title: str
    content: str
    filename: str


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{max(1, size // 1024)} KB"


def parse_upload(upload: UploadedFile[bytes]) -> ParsedUpload:
    """Extract the text of one uploaded reference.

    Returns ParsedUpload(title, content, filename). Raises UploadError (message names the file)
    for an unsupported type, a file over MAX_UPLOAD_BYTES, an unreadable or hostile file, no
    text, or more than MAX_REFERENCE_CHARS characters of text.
    """
    filename = PurePath(upload.name or "file").name[:255]
    suffix = PurePath(filename).suffix.lower()
    if suffix not in ALLOWED_EXTENSIONS:
        raise UploadError(f"“{filename}” is not a supported file type. Upload .md, .txt or .docx files.")
    if upload.size is not None and upload.size > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"“{filename}” is {_human_size(upload.size)}; the limit is {_human_size(MAX_UPLOAD_BYTES)} per file."
        )
    raw = upload.read(MAX_UPLOAD_BYTES + 1)
    if len(raw) > MAX_UPLOAD_BYTES:
        raise UploadError(f"“{filename}” is larger than {_human_size(MAX_UPLOAD_BYTES)}.")
    text = _docx_text(raw, filename) if suffix == ".docx" else _plain_text(raw, filename)
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise UploadError(f"“{filename}” contains no text.")
    if len(text) > MAX_REFERENCE_CHARS:
        raise UploadError(f"“{filename}” has more than {MAX_REFERENCE_CHARS:,} characters of text.")
    return ParsedUpload(title=PurePath(filename).stem[:200] or filename, content=text, filename=filename)


def _plain_text(raw: bytes, filename: str) -> str:
    if b"\x00" in raw:
        raise UploadError(f"“{filename}” looks like a binary file, not text.")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UploadError(f"“{filename}” is not readable text (save it as UTF-8).")


# --- .docx ---------------------------------------------------------------------------------------


class _Refused(Exception):
    """Internal: a bound was hit; the message is completed with the file name by _docx_text."""


def _docx_text(raw: bytes, filename: str) -> str:
    invalid = f"“{filename}” is not a valid .docx file (it may be corrupt or renamed)."
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UploadError(invalid) from exc
    try:
        with archive:
            entries = archive.infolist()
            if len(entries) > DOCX_MAX_ENTRIES:
                raise UploadError(f"“{filename}” has too many parts ({len(entries):,}) to be a document.")
            declared = sum(max(0, e.file_size) for e in entries)
            if declared > DOCX_MAX_DECLARED_BYTES:
                raise UploadError(
                    f"“{filename}” would expand to {_human_size(declared)}; "
                    f"the limit is {_human_size(DOCX_MAX_DECLARED_BYTES)}."
                )
            names = {e.filename for e in entries}
            main = _main_part(archive, names)
            if main is None:
                raise UploadError(invalid)
            deadline = time.process_time() + DOCX_MAX_PARSE_SECONDS
            styles = _style_names(archive, names, posixpath.join(posixpath.dirname(main), "styles.xml"), deadline)
            return "\n\n".join(p for p in _paragraphs(archive, main, styles, deadline) if p.strip())
    except UploadError:
        raise
    except _Refused as exc:
        raise UploadError(f"“{filename}” {exc}") from exc
    except Exception as exc:  # zip, zlib, lxml and encryption errors vary; a broken upload is never a 500
        raise UploadError(f"“{filename}” could not be read as a .docx file.") from exc


def _stream(archive: zipfile.ZipFile, name: str) -> Iterator[bytes]:
    """The decompressed bytes of one entry in chunks, refusing past DOCX_MAX_PART_BYTES."""
    total = 0
    with archive.open(name) as part:
        while chunk := part.read(_CHUNK):
            total += len(chunk)
            if total > DOCX_MAX_PART_BYTES:
                raise _Refused(f"expands to more than {_human_size(DOCX_MAX_PART_BYTES)} of XML.")
            yield chunk


def _pull_parser(tag: str | tuple[str, ...] | None) -> Any:  # an lxml XMLPullParser (lxml ships no types)
    from lxml import etree

    # No DTD, no entity expansion, no network: a billion-laughs or external entity does nothing.
    return etree.XMLPullParser(
        events=("end",),
        tag=tag,
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _events(
    archive: zipfile.ZipFile, name: str, tag: str | tuple[str, ...] | None, deadline: float
) -> Iterator[tuple[str, Any]]:
    """(event, lxml element) pairs of part ``name``; raises _Refused past ``deadline`` (process time)."""
    parser = _pull_parser(tag)
    for chunk in _stream(archive, name):
        if b"<!DOCTYPE" in chunk or b"<!ENTITY" in chunk:
            raise _Refused("contains a document type declaration, which Word never writes.")
        parser.feed(chunk)
        yield from parser.read_events()
        if time.process_time() > deadline:
            raise _Refused("takes too long to read; save it again from your word processor or paste the text.")
    parser.close()
    yield from parser.read_events()


def _main_part(archive: zipfile.ZipFile, names: set[str]) -> str | None:
    """The officeDocument part named in _rels/.rels (usually word/document.xml)."""
    if "_rels/.rels" in names:
        deadline = time.process_time() + DOCX_MAX_PARSE_SECONDS
        for _, rel in _events(archive, "_rels/.rels", f"{_REL}Relationship", deadline):
            if (rel.get("Type") or "").endswith(_OFFICE_DOCUMENT):
                target = (rel.get("Target") or "").lstrip("/")
                if target in names:
                    return target
    return "word/document.xml" if "word/document.xml" in names else None


def _style_names(archive: zipfile.ZipFile, names: set[str], path: str, deadline: float) -> dict[str, str]:
    """styleId -> lowercase style name ("Heading1" -> "heading 1"), so localized ids still map."""
    styles: dict[str, str] = {}
    if path not in names:
        return styles
    for _, style in _events(archive, path, f"{_W}style", deadline):
        name = style.find(f"{_W}name")
        if style.get(f"{_W}styleId") and name is not None:
            styles[style.get(f"{_W}styleId")] = (name.get(f"{_W}val") or "").lower()
        style.clear()
        if len(styles) > DOCX_MAX_PARAGRAPHS:
            raise _Refused("has too many styles to be a document.")
    return styles


def _heading(style_id: str, text: str, styles: dict[str, str]) -> str:
    name = styles.get(style_id, "") or style_id.lower().replace("heading", "heading ")
    if name.startswith("heading") and text.strip():
        level = name.removeprefix("heading").strip()
        hashes = "#" * (int(level) if level.isdigit() and 0 < int(level) < 7 else 2)
        return f"{hashes} {text}"
    return text


_P, _TC, _TR, _TBL, _BODY = (f"{_W}{t}" for t in ("p", "tc", "tr", "tbl", "body"))
_TEXT = {f"{_W}t": None, f"{_W}tab": "\t", f"{_W}br": "\n", f"{_W}cr": "\n"}
_KEY = "atelier-key"  # our own attribute: which buffer a paragraph, cell or row writes into


class _DocxText:
    """The buffers `_paragraphs` fills: text keyed by the paragraph, cell or row it belongs to, and counts."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.buffers: dict[str, list[str]] = {}
        self.heading_style: dict[str, str] = {}
        self.paragraphs = 0
        self.chars = 0

    def key(self, element: Any) -> str:  # an lxml element
        """The element's buffer key, given it on first use (our own attribute on the element)."""
        value: str | None = element.get(_KEY)
        if value is None:
            value = str(next(self.counter))
            element.set(_KEY, value)
        return value

    def take(self, element: Any, sep: str) -> str:
        """Pop what the element's buffer holds, joined with `sep` ("" when it has none)."""
        own = element.get(_KEY)
        return sep.join(self.buffers.pop(own, [])) if own else ""

    def add(self, element: Any, text: str) -> None:
        """Append `text` to the element's buffer."""
        self.buffers.setdefault(self.key(element), []).append(text)

    def run_text(self, element: Any, parent: Any) -> None:
        """A `w:t`, `w:tab` or `w:br` inside a run: its text goes to the run's paragraph."""
        if parent is None or parent.tag != f"{_W}r":
            return
        paragraph = next(element.iterancestors(_P), None)
        if paragraph is not None:
            fixed = _TEXT[element.tag]
            text = (element.text or "") if fixed is None else fixed
            self.add(paragraph, text)
            self.chars += len(text)

    def paragraph(self, element: Any, parent: Any, styles: dict[str, str]) -> str | None:
        """A finished `w:p`: its text for the body (a heading gets `#`s), or None when it went into a cell.

        Raises _Refused past DOCX_MAX_PARAGRAPHS.
        """
        self.paragraphs += 1
        if self.paragraphs > DOCX_MAX_PARAGRAPHS:
            raise _Refused(f"has more than {DOCX_MAX_PARAGRAPHS:,} paragraphs.")
        own = element.get(_KEY)
        text = self.take(element, "")
        style = self.heading_style.pop(own, "") if own else ""
        if parent is not None and parent.tag == _BODY:
            return _heading(style, text, styles)
        if parent is not None and parent.tag == _TC:
            self.add(parent, text)
        # else: a paragraph in a text box, not part of the body text (as python-docx reads it)
        return None

    def row(self, element: Any, parent: Any) -> str | None:
        """A finished `w:tr`: "cell | cell" for the body, or None when it joined an outer cell (nested table)."""
        row = self.take(element, " | ")
        table = parent if parent is not None and parent.tag == _TBL else None
        outer = table.getparent() if table is not None else None
        if outer is not None and outer.tag == _BODY:
            return row
        if outer is not None and outer.tag == _TC:  # a nested table: its rows join the outer cell
            self.add(outer, row)
        return None


def _paragraphs(archive: zipfile.ZipFile, main: str, styles: dict[str, str], deadline: float) -> Iterator[str]:
    """Body paragraphs and table rows ("cell | cell") in document order, bounded.

    Every element is handled at its end event and then released (cleared, earlier siblings
    deleted), so the tree never holds more than the path of open elements: a single paragraph of
    a million runs costs no more memory than a short one. Text goes into small buffers keyed by
    the paragraph, cell or row it belongs to (`_DocxText`).
    """
    found = _DocxText()
    for _, element in _events(archive, main, None, deadline):
        tag = element.tag
        parent = element.getparent()
        line: str | None = None
        if tag in _TEXT:
            found.run_text(element, parent)
        elif tag == f"{_W}pStyle" and parent is not None and parent.tag == f"{_W}pPr":
            paragraph = parent.getparent()
            if paragraph is not None and paragraph.tag == _P:
                found.heading_style[found.key(paragraph)] = element.get(f"{_W}val") or ""
        elif tag == _P:
            line = found.paragraph(element, parent, styles)
        elif tag == _TC:
            cell = found.take(element, "\n").strip()
            if parent is not None and parent.tag == _TR:
                found.add(parent, cell)
        elif tag == _TR:
            line = found.row(element, parent)
        if line is not None:
            yield line
        if found.chars > MAX_REFERENCE_CHARS + 2:
            raise _Refused(f"has more than {MAX_REFERENCE_CHARS:,} characters of text.")
        # Release it: what it held is in the buffers now.
        element.clear()
        if parent is not None:
            while element.getprevious() is not None:
                del parent[0]
