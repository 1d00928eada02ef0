"""Hostile model output never becomes executable HTML: rendered Markdown, the diff view, the HTML export,
and the document page itself."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from orchestration.documents import diff_versions, export_html
from orchestration.models import Project, Status, WritingSession
from orchestration.rendering import render_markdown
from orchestration.versions import record_version

HOSTILE = {
    "script tag": "<script>window.__pwned = 1</script>Hello",
    "script in markdown paragraph": "Intro\n\n<script src=//evil.example/x.js></script>\n\nOutro",
    "javascript link": '<a href="javascript:window.__pwned=1">click</a>',
    "javascript markdown link": "[x](javascript:alert(1))",
    "javascript link with odd case": "[x](JaVaScRiPt:alert(1))",
    "entity-encoded javascript link": "[x](&#106;avascript:alert(1))",
    "javascript link split by a tab": '<a href="java\tscript:alert(1)">t</a>',
    "onerror on img": "<img src=x onerror=alert(1)>",
    "remote image": "<img src=//evil.example/pixel.png>",
    "markdown image": "![pixel](http://evil.example/pixel.png)",
    "onclick handler": '<div onclick="alert(1)">click me</div>',
    "onmouseover on a link": '<a href="http://ok.example" onmouseover="alert(1)">hover</a>',
    "svg onload": '<svg onload="alert(1)"><circle r="4"/></svg>',
    "svg with script": "<svg><script>alert(1)</script></svg>",
    "svg use with remote href": '<svg><use href="http://evil.example/s.svg#x"/></svg>',
    "iframe": '<iframe src="http://evil.example/"></iframe>',
    "iframe srcdoc": '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "data url link": "[d](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "data url image": '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
    "style attribute": '<p style="background:url(http://evil.example/x.png)">styled</p>',
    "style element": "<style>body{background:url(http://evil.example/x.png)}</style>text",
    "link element": '<link rel="stylesheet" href="http://evil.example/x.css">',
    "meta refresh": '<meta http-equiv="refresh" content="0;url=http://evil.example/">',
    "base tag": '<base href="http://evil.example/">',
    "object and embed": '<object data="http://evil.example/x.swf"></object><embed src="http://evil.example/y">',
    "form": '<form action="http://evil.example/"><input name="q"><button>Go</button></form>',
    "math mutation": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "raw html block in markdown": '# Title\n\n<div markdown="1"><b onmouseover=alert(1)>bold</b></div>',
    "protocol-relative link": '<a href="//evil.example/">pr</a>',
    "code span keeps text": "`<script>alert(1)</script>`",
}

ALLOWED_HREF_PREFIXES = ("http://", "https://", "mailto:", "#")
FORBIDDEN_TAGS = {
    "script",
    "iframe",
    "frame",
    "svg",
    "math",
    "img",
    "image",
    "use",
    "object",
    "embed",
    "style",
    "link",
    "meta",
    "base",
    "form",
    "input",
    "button",
    "textarea",
    "video",
    "audio",
    "source",
}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def assert_inert(html: str) -> None:
    """Nothing in this HTML can run script or load anything from anywhere."""
    collector = _Collector()
    collector.feed(str(html))
    for tag, attrs in collector.tags:
        assert tag not in FORBIDDEN_TAGS, f"<{tag}> survived in {html!r}"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name} survived in {html!r}"
            assert name not in {"style", "src", "srcset", "srcdoc", "action", "formaction", "background", "data"}
            assert "javascript:" not in (value or "").lower().replace(" ", "").replace("\t", "")
        if tag == "a" and attrs.get("href") is not None:
            assert attrs["href"].lower().startswith(ALLOWED_HREF_PREFIXES), attrs["href"]
            assert "noopener" in (attrs.get("rel") or ""), f"link without rel=noopener in {html!r}"


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_render_markdown_leaves_nothing_executable(payload):
    assert_inert(render_markdown(payload))


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("mode", ["inline", "side"])
def test_diff_view_shows_hostile_text_as_text(payload, mode):
    html = diff_versions("Harmless start.\n", payload, mode=mode)

    assert_inert(html)
    assert "<ins>" in html


def test_diff_escapes_markup_so_it_reads_as_source():
    html = diff_versions("a", "<script>alert(1)</script>")

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_safe_links_survive_with_noopener():
    html = render_markdown('<a href="http://evil.example">e</a> and [docs](https://example.com/docs)')

    assert 'href="http://evil.example"' in html and 'href="https://example.com/docs"' in html
    assert html.count('rel="noopener noreferrer nofollow ugc"') == 2
    assert_inert(html)


def test_code_spans_show_markup_as_text():
    assert "&lt;script&gt;" in render_markdown("`<script>alert(1)</script>`")


@pytest.fixture
def hostile_session(owner) -> WritingSession:
    project = Project.objects.create(owner=owner, name="Hostile")
    session = WritingSession.objects.create(
        project=project, title="<script>t</script>", brief="b", status=Status.PAUSED
    )
    record_version(session=session, content="A safe first version.\n")
    record_version(session=session, content="\n\n".join(HOSTILE.values()))
    session.refresh_from_db()
    return session


class _Splitter(HTMLParser):
    """Separates the export's <head> (our own stylesheet) from its <body> (the document)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.in_head = False
        self.head_tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "head":
            self.in_head = True
        elif self.in_head:
            self.head_tags.append(tag)

    def handle_endtag(self, tag) -> None:
        if tag == "head":
            self.in_head = False


def test_html_export_of_hostile_output_has_only_our_stylesheet(hostile_session):
    html = export_html(hostile_session)

    head, body = html.split("</head>", 1)
    splitter = _Splitter()
    splitter.feed(head + "</head>")
    assert set(splitter.head_tags) == {"meta", "title", "style"}
    assert "<title>&lt;script&gt;t&lt;/script&gt;</title>" in head
    assert_inert(body)


def test_html_export_download_of_hostile_output_is_inert(owner_client, hostile_session):
    response = owner_client.get(reverse("document_export", args=[hostile_session.pk, "html"]))

    assert_inert(response.content.decode().split("</head>", 1)[1])


def _document_part(page: str) -> str:
    """The panel's rendered document, version view and diff: everything between our markers."""
    start = page.index('data-testid="document-panel"')
    return page[start : page.index("</section>", start)]


def test_document_page_with_hostile_output_is_inert(owner_client, hostile_session):
    page = owner_client.get(reverse("document_page", args=[hostile_session.pk])).content.decode()
    panel = _document_part(page)
    # The panel's own forms and buttons are ours; take the document body and the version view apart.
    start = panel.index('id="document-current"')
    assert_inert(panel[start : panel.index("<details", start)])
    for script in [line for line in page.splitlines() if "<script" in line]:
        assert 'src="/static/' in script  # only our own static scripts, no inline ones


def test_version_view_and_diff_of_hostile_output_are_inert(owner_client, hostile_session):
    version = owner_client.get(
        reverse("document_version", args=[hostile_session.pk, 2]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert_inert(version)

    for mode in ("inline", "side"):
        diff = owner_client.get(
            reverse("document_diff", args=[hostile_session.pk]), {"a": 1, "b": 2, "mode": mode}, HTTP_HX_REQUEST="true"
        ).content.decode()
        assert_inert(diff)
        assert "&lt;script&gt;" in diff
