"""Document versions and how much changed between them."""

from __future__ import annotations

from orchestration.matching import BoundedMatcher
from orchestration.models import DocumentVersion, Turn, WritingSession


def change_ratio(old: str, new: str) -> float:
    """Share (0..1) of the document that changed, by words. 1.0 for a first version."""
    if not old:
        return 1.0 if new else 0.0
    old_words, new_words = old.split(), new.split()
    # Bounded: plain difflib took minutes on long documents with repeated words (see matching.py).
    matcher = BoundedMatcher(old_words, new_words)
    return round(1.0 - matcher.ratio(), 6)


def record_version(
    *, session: WritingSession, content: str, turn: Turn | None = None, note: str = ""
) -> DocumentVersion:
    """Append a version and make it the session's working document. Call inside a transaction."""
    previous = session.versions.order_by("-number").only("number", "content").first()
    number = (previous.number if previous else 0) + 1
    version = DocumentVersion.objects.create(
        session=session,
        number=number,
        content=content,
        turn=turn,
        change_ratio=change_ratio(previous.content if previous else "", content),
        note=note,
    )
    session.document = content
    WritingSession.objects.filter(pk=session.pk).update(document=content)
    return version
