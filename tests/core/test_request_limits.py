"""Request bodies are bounded before Django parses them (issue 9, case 3).

The requests go through the real ASGI application (atelier.asgi.application), in this process,
so the memory they cost is measured here (< 100 MB growth, < 2 s CPU for a 50 MB body).
"""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from tests.resources import measure

MB = 1024 * 1024
BOUNDARY = b"----atelierboundary"


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


def _multipart_chunks(total: int, chunk: int = 256 * 1024):
    """A multipart body of about ``total`` bytes: one file part, sent in pieces."""
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="login"\r\n\r\nx@example.com\r\n'
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\n"
    )
    tail = b"\r\n--" + BOUNDARY + b"--\r\n"
    yield head
    left = total - len(head) - len(tail)
    piece = b"a" * chunk
    while left > 0:
        yield piece[: min(chunk, left)]
        left -= chunk
    yield tail


async def _call(path: str, chunks, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """Run one request through the ASGI app; returns (status, body, bytes the app pulled)."""
    from atelier.asgi import application

    iterator = iter(chunks)
    pulled = 0
    pending = next(iterator, None)
    sent: list[dict] = []

    async def receive():
        nonlocal pending, pulled
        if pending is None:
            await asyncio.Future()  # the client stays connected (Django listens for a disconnect)
        body, pending = pending, next(iterator, None)
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": pending is not None}

    async def send(message):
        sent.append(message)

    await application(_scope(path, headers), receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    assert start is not None, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled


MULTIPART = (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY)


async def test_an_anonymous_50_mb_chunked_post_is_refused_with_413_and_bounded_memory():
    with measure() as usage:
        status, body, pulled = await _call("/accounts/login/", _multipart_chunks(50 * MB), [MULTIPART])
    assert status == 413 and body == b"Request body too large."
    assert pulled <= settings.MAX_REQUEST_BODY_BYTES + 256 * 1024  # stopped reading at the cap
    assert usage.peak_rss_growth_mb < 100, f"{usage.peak_rss_growth_mb:.0f} MB"
    assert usage.cpu_seconds < 2, f"{usage.cpu_seconds:.2f} s"


async def test_a_declared_content_length_over_the_cap_is_refused_without_reading_the_body():
    length = str(50 * MB).encode()
    status, _, pulled = await _call(
        "/accounts/login/", _multipart_chunks(50 * MB), [MULTIPART, (b"content-length", length)]
    )
    assert status == 413
    assert pulled == 0


@pytest.mark.parametrize("value", [b"-1", b"12abc", b"99999999999999999999"])
async def test_a_malformed_or_absurd_content_length_is_refused(value):
    status, _, _ = await _call("/accounts/login/", [b"x"], [MULTIPART, (b"content-length", value)])
    assert status == 413


@pytest.mark.django_db(transaction=True)
async def test_a_body_under_the_cap_reaches_django():
    # A form field beyond DATA_UPLOAD_MAX_MEMORY_SIZE is Django's 400, not a 500 and not our 413.
    field = b"a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    body = b"login=x%40example.com&password=" + field
    status, _, pulled = await _call(
        "/accounts/login/",
        [body],
        [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"cookie", b"csrftoken=" + b"k" * 32),  # so CSRF reads the form (and Django meets its size)
        ],
    )
    assert status == 400
    assert pulled == len(body)


def test_limits_are_sized_to_the_largest_legitimate_request():
    from orchestration.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES

    # Ten 1 MB references in one upload must fit; files beyond one reference go to disk.
    assert settings.MAX_REQUEST_BODY_BYTES >= MAX_UPLOAD_FILES * MAX_UPLOAD_BYTES + MB
    assert MAX_UPLOAD_BYTES <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE < 2 * MB
