"""Reference document uploads: .md, .txt and .docx turned into plain text, with clear refusals."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from django.core.files.uploadedfile import UploadedFile

MAX_UPLOAD_BYTES = 1024 * 1024  # 1 MB per file
MAX_UPLOAD_FILES = 10
MAX_REFERENCE_CHARS = 200_000  # what a reference may hold once extracted (a .docx can expand a lot)
ALLOWED_EXTENSIONS = (".md", ".markdown", ".txt", ".docx")


class UploadError(Exception):
    """A file we refuse; the message names the file and says why."""


@dataclass(frozen=True)
class ParsedUpload:
    title: str
    content: str
    filename: str


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 1024 * 1024 else f"{max(1, size // 1024)} KB"


def parse_upload(upload: UploadedFile) -> ParsedUpload:
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


def _docx_text(raw: bytes, filename: str) -> str:
    import docx  # python-docx
    from docx.opc.exceptions import PackageNotFoundError

    if not zipfile.is_zipfile(io.BytesIO(raw)):
        raise UploadError(f"“{filename}” is not a valid .docx file (it may be corrupt or renamed).")
    try:
        document = docx.Document(io.BytesIO(raw))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UploadError(f"“{filename}” is not a valid .docx file (it may be corrupt or renamed).") from exc
    except Exception as exc:  # lxml and zip errors vary; a broken upload must never be a 500
        raise UploadError(f"“{filename}” could not be read as a .docx file.") from exc
    parts: list[str] = []
    for paragraph in document.paragraphs:
        style = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        text = paragraph.text
        if style.startswith("heading") and text.strip():
            level = style.removeprefix("heading").strip()
            hashes = "#" * (int(level) if level.isdigit() and 0 < int(level) < 7 else 2)
            text = f"{hashes} {text}"
        parts.append(text)
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text.strip() for cell in row.cells))
    return "\n\n".join(p for p in parts if p.strip())
