"""Hostile uploads stay cheap (issue 9, cases 1-2): refused clearly within < 2 s CPU and < 100 MB.

Each file goes through the real upload view; CPU time and the peak memory growth of this
process are measured around the request (tests/resources.py).
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.resources import measure
from tests.studio_fixtures import *  # noqa: F403 - fixtures

HTMX = {"HTTP_HX_REQUEST": "true"}
CPU_BOUND_S = 2.0
MEMORY_BOUND_MB = 100


def _template_docx() -> zipfile.ZipFile:
    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))


def _docx_with_body(body_xml: str = "", *, extra: dict[str, bytes] | None = None, level: int = 9) -> bytes:
    """A real python-docx package whose document.xml body starts with ``body_xml``."""
    template = _template_docx()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for item in template.infolist():
            data = template.read(item.filename)
            if item.filename == "word/document.xml":
                text = data.decode()
                start = text.index("<w:body>") + len("<w:body>")
                data = (text[:start] + body_xml + text[start:]).encode()
            archive.writestr(item.filename, data)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def _upload(client, session, *files):
    return client.post(reverse("reference_add", args=[session.pk]), {"files": list(files)}, **HTMX)


def _measured_upload(client, session, name: str, raw: bytes):
    with measure() as usage:
        response = _upload(client, session, SimpleUploadedFile(name, raw))
    assert response.status_code == 200
    assert usage.cpu_seconds < CPU_BOUND_S, f"{usage.cpu_seconds:.2f} s CPU"
    assert usage.peak_rss_growth_mb < MEMORY_BOUND_MB, f"{usage.peak_rss_growth_mb:.0f} MB"
    return response.content.decode()


@pytest.mark.parametrize("paragraphs", [150_000, 1_000_000])
def test_a_small_docx_of_empty_paragraphs_is_refused_quickly(owner_client, draft, paragraphs):
    raw = _docx_with_body("<w:p/>" * paragraphs)
    # A few KB more than an empty document (2.4 KB and 5.5 KB pinned a process for 17 s and 70 s).
    assert len(raw) - len(_docx_with_body("")) < 24 * 1024
    html = _measured_upload(owner_client, draft, "empty.docx", raw)
    assert "“empty.docx” has more than 20,000 paragraphs." in html
    assert not draft.references.exists()


def test_a_long_real_docx_under_the_bounds_is_read_whole(owner_client, draft):
    body = "".join(f"<w:p><w:r><w:t>Line {i}.</w:t></w:r></w:p><w:p/>" for i in range(9_000))
    html = _measured_upload(owner_client, draft, "long.docx", _docx_with_body(body))
    assert "Added 1 reference document" in html
    content = draft.references.get().content
    assert content.startswith("Line 0.\n\nLine 1.") and content.endswith("Line 8999.")


def test_a_docx_zip_bomb_is_refused_from_its_declared_sizes(owner_client, draft):
    # ~300 KB on the wire, 300 MB once inflated (the old path added 580 MB to the process).
    run = "<w:p><w:r><w:t>" + "a" * (300 * 1024 * 1024) + "</w:t></w:r></w:p>"
    raw = _docx_with_body(run)
    assert len(raw) < 1024 * 1024
    html = _measured_upload(owner_client, draft, "bomb.docx", raw)
    assert "“bomb.docx” would expand to 300." in html and "the limit is 50.0 MB." in html
    assert not draft.references.exists()


def test_a_bomb_in_a_media_part_is_refused_without_inflating_it(owner_client, draft):
    raw = _docx_with_body("<w:p><w:r><w:t>Hi</w:t></w:r></w:p>", extra={"word/media/big.bin": b"\0" * (200 << 20)})
    html = _measured_upload(owner_client, draft, "media.docx", raw)
    assert "“media.docx” would expand to 200." in html


@pytest.mark.parametrize(
    "body",
    [
        # One paragraph of 700,000 runs: 22 MB of XML, held by no tree (each run is released as read).
        "<w:p>" + "<w:r><w:t></w:t></w:r>" * 700_000 + "</w:p>",
        # 900,000 empty elements that carry no text, in one paragraph.
        "<w:p>" + "<w:proofErr/>" * 900_000 + "</w:p>",
    ],
    ids=["runs", "markers"],
)
def test_one_enormous_paragraph_is_refused_with_bounded_memory(owner_client, draft, body):
    raw = _docx_with_body(body)
    assert len(raw) < 200 * 1024
    html = _measured_upload(owner_client, draft, "wide.docx", raw)
    assert "“wide.docx”" in html and "Added" not in html
    assert not draft.references.exists()


def test_text_beyond_the_reference_limit_stops_the_parse(owner_client, draft):
    body = "".join(f"<w:p><w:r><w:t>{'word ' * 200}</w:t></w:r></w:p>" for _ in range(400))
    html = _measured_upload(owner_client, draft, "novel.docx", _docx_with_body(body))
    assert "“novel.docx” has more than 200,000 characters of text." in html


def test_too_many_zip_entries_are_refused(owner_client, draft):
    extra = {f"word/media/{i}.txt": b"" for i in range(1200)}
    html = _measured_upload(owner_client, draft, "parts.docx", _docx_with_body("", extra=extra))
    assert "“parts.docx” has too many parts (1," in html


def test_entity_expansion_is_refused(owner_client, draft):
    template = _template_docx()
    out = io.BytesIO()
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 9))
        + ']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        "<w:p><w:r><w:t>&lol8;</w:t></w:r></w:p></w:body></w:document>"
    )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in template.infolist():
            data = laughs.encode() if item.filename == "word/document.xml" else template.read(item.filename)
            archive.writestr(item.filename, data)
    html = _measured_upload(owner_client, draft, "laughs.docx", out.getvalue())
    assert "“laughs.docx” contains a document type declaration" in html


def test_tables_and_headings_keep_document_order(owner_client, draft):
    import docx

    document = docx.Document()
    document.add_heading("Findings", level=2)
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"r{r}c{c}"
    document.add_paragraph("After the table.")
    buffer = io.BytesIO()
    document.save(buffer)
    _measured_upload(owner_client, draft, "table.docx", buffer.getvalue())
    assert draft.references.get().content == "## Findings\n\nr0c0 | r0c1\n\nr1c0 | r1c1\n\nAfter the table."
