"""The document panel in real Chromium against the real ASGI server: compare, restore, export, copy,
and hostile model output that must run nothing and load nothing from elsewhere.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_documents.py
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import make_user

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
PASSWORD = "correct horse battery staple"

V1 = "# Field notes\n\nThe quick brown fox jumps over the lazy dog.\n\n- one idea\n"
V2 = "# Field notes\n\nThe quick red fox leaps over the lazy dog.\n\n- one idea\n- **two** ideas\n"
V3 = (
    "# Field notes\n\nThe quick red fox leaps over the sleepy dog, twice.\n\n"
    "- one idea\n- **two** ideas, *carefully* argued\n\nA closing line.\n"
)

HOSTILE = "\n\n".join(
    [
        "# Totally normal essay",
        "<script>window.__pwned = 'script'</script>",
        "<img src=x onerror=\"window.__pwned = 'img'\">",
        "<img src=//evil.example/pixel.png>",
        "![pixel](http://evil.example/md-pixel.png)",
        "<svg onload=\"window.__pwned = 'svg'\"><script>window.__pwned = 'svg-script'</script></svg>",
        '<iframe src="http://evil.example/frame"></iframe>',
        '<iframe srcdoc="<script>parent.__pwned = 1</script>"></iframe>',
        "<div onclick=\"window.__pwned = 'click'\">click me</div>",
        "[javascript link](javascript:window.__pwned='link')",
        '<a href="javascript:alert(1)">alert link</a>',
        "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        '<p style="background:url(http://evil.example/bg.png)">styled</p>',
        '<link rel="stylesheet" href="http://evil.example/x.css">',
        '<object data="http://evil.example/x.swf"></object>',
        '<a href="http://evil.example/page">an ordinary outside link</a>',
        "<details open ontoggle=\"window.__pwned = 'toggle'\"><summary>s</summary></details>",
    ]
)


def _make_session(owner, *, title: str, contents: list[str], status: str = "completed"):
    from orchestration.models import Project, WritingSession
    from orchestration.versions import record_version

    project = Project.objects.create(owner=owner, name="Essays")
    session = WritingSession.objects.create(project=project, title=title, brief="Write.", status=status)
    for index, content in enumerate(contents, start=1):
        record_version(session=session, content=content, note=f"Draft {index}")
    return session


@pytest.fixture
def writer(live_app):
    return make_user("documents@example.com", password=PASSWORD)


def _download(page, testid: str, tmp_path: Path) -> tuple[str, Path]:
    with page.expect_download() as info:
        page.get_by_test_id(testid).click()
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    return download.suggested_filename, target


def test_compare_restore_export_and_copy(page, live_app, writer, login, tmp_path):
    from docx import Document

    session = _make_session(writer, title="Field Notes", contents=[V1, V2, V3])
    base = live_app.url
    login(page, live_app, "documents@example.com", PASSWORD)
    page.goto(f"{base}/sessions/{session.pk}/document/")

    rows = page.locator("[data-testid=version-list] tbody tr")
    assert rows.count() == 3
    assert page.get_by_test_id("document-current").locator("h1").inner_text() == "Field notes"

    # Compare v1 with v3 (htmx: the page does not reload).
    page.select_option("#diff-a", "1")
    page.select_option("#diff-b", "3")
    page.get_by_test_id("compare").click()
    result = page.get_by_test_id("diff-result")
    result.wait_for()
    assert page.url == f"{base}/sessions/{session.pk}/document/"
    assert "v1 → v3" in result.inner_text()
    deleted = result.locator("del").all_inner_texts()
    inserted = result.locator("ins").all_inner_texts()
    assert any("brown" in text for text in deleted) and any("jumps" in text for text in deleted)
    assert any("red" in text for text in inserted) and any("sleepy" in text for text in inserted)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The viewport from the compare form down, below the sticky top bar.
    page.get_by_test_id("diff-form").evaluate(
        "form => window.scrollTo(0, form.getBoundingClientRect().top + window.scrollY - 140)"
    )
    page.screenshot(path=str(SCREENSHOTS / "diff.png"))

    # Side by side: the old and the new line in two columns.
    page.select_option("#diff-mode", "side")
    page.get_by_test_id("compare").click()
    page.locator(".diff-side").wait_for()
    assert any("sleepy" in text for text in page.locator(".diff-side td.diff-new ins").all_inner_texts())
    assert any("lazy" in text for text in page.locator(".diff-side td.diff-old del").all_inner_texts())

    # View v1, then restore it: a new v4 becomes the working document.
    page.get_by_test_id("view-version-1").click()
    assert "brown fox" in page.get_by_test_id("version-view").inner_text()
    page.get_by_test_id("restore-1").click()
    page.wait_for_load_state()
    assert "Restored v1. It is now the working document as v4." in page.locator(".messages").inner_text()
    assert rows.count() == 4
    assert "Restored from v1" in rows.nth(3).inner_text()
    assert "brown fox" in page.get_by_test_id("document-current").inner_text()

    # Exports: all three formats download and open.
    name, path = _download(page, "export-md", tmp_path)
    assert name == "field-notes.md"
    assert path.read_text() == V1

    name, path = _download(page, "export-html", tmp_path)
    assert name == "field-notes.html"
    exported = page.context.new_page()
    exported.goto(path.as_uri())
    assert exported.locator("h1").inner_text() == "Field notes"
    assert exported.locator("li").all_inner_texts() == ["one idea"]
    exported.close()

    name, path = _download(page, "export-docx", tmp_path)
    assert name == "field-notes.docx"
    doc = Document(io.BytesIO(path.read_bytes()))
    assert [(p.style.name, p.text) for p in doc.paragraphs] == [
        ("Heading 1", "Field notes"),
        ("Normal", "The quick brown fox jumps over the lazy dog."),
        ("List Bullet", "one idea"),
    ]

    # Copy to clipboard: the button says so, and the clipboard holds the Markdown.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    copy = page.get_by_test_id("copy-document")
    copy.click()
    page.wait_for_function("document.querySelector('[data-testid=copy-document]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == V1


def test_hostile_model_output_runs_no_script_and_loads_nothing_from_elsewhere(page, live_app, writer, login, tmp_path):
    session = _make_session(writer, title="Hostile", contents=["A harmless first draft.\n", HOSTILE], status="paused")
    base = live_app.url
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    login(page, live_app, "documents@example.com", PASSWORD)
    page.goto(f"{base}/sessions/{session.pk}/document/")
    panel = page.get_by_test_id("document-current")
    assert panel.locator("h1").inner_text() == "Totally normal essay"

    # Poke everything a user might touch: the old click target, the links that were hostile.
    panel.get_by_text("click me").click()
    panel.get_by_text("javascript link").click()
    panel.get_by_text("alert link").click()
    panel.get_by_text("data link").click()
    assert page.url == f"{base}/sessions/{session.pk}/document/"
    outside = panel.get_by_role("link", name="an ordinary outside link")
    assert outside.get_attribute("href") == "http://evil.example/page"
    assert "noopener" in outside.get_attribute("rel")

    # The same text through the version view, the diff (both modes) and the edit form.
    page.get_by_test_id("view-version-2").click()
    page.get_by_test_id("version-view").wait_for()
    for mode in ("inline", "side"):
        page.select_option("#diff-mode", mode)
        page.get_by_test_id("compare").click()
        page.locator(f".diff-{mode}").wait_for()
    page.wait_for_load_state("networkidle")

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    assert panel.locator("script, img, svg, iframe, object, link, [style], [onclick], [onerror]").count() == 0
    foreign = [url for url in requests if not url.startswith(base + "/")]
    assert foreign == [], f"requests left the app: {foreign}"
    assert any("/document/diff/" in url for url in requests)  # the listener did see the htmx calls

    # The exported HTML file, opened from disk, is just as inert.
    with page.expect_download() as info:
        page.get_by_test_id("export-html").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    exported = page.context.new_page()
    file_requests: list[str] = []
    exported.on("request", lambda request: file_requests.append(request.url))
    exported.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    exported.goto(path.as_uri())
    exported.wait_for_load_state("networkidle")
    assert exported.locator("h1").inner_text() == "Totally normal essay"
    exported.get_by_text("click me").click()
    assert exported.evaluate("typeof window.__pwned") == "undefined"
    assert dialogs == []
    assert file_requests == [path.as_uri()]
