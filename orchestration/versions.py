"""Document versions and how much changed between them."""

from __future__ import annotations

from atelier.core.sql import create_rows
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
    *,
    session: WritingSession,
    content: str,
    turn: Turn | None = None,
    note: str = "",
    previous: tuple[int, str] | None = None,
    save_document: bool = True,
) -> DocumentVersion:
    """Append a version and make it the session's working document. Call inside a transaction.

    ``previous``: (number, content) of the session's latest version ((0, "") for none) when the caller
    already holds it (the engine does, for the document it is working on), saving the lookup.
    ``save_document=False``: the caller writes ``session.document`` itself (the engine folds it into its
    one session UPDATE per turn).
    """
    if previous is None:
        # Filter by session_id, not session.versions: the related manager reloads the deferred session_id.
        latest = (
            DocumentVersion.objects.filter(session_id=session.pk)
            .order_by("-number")
            .values_list("number", "content")
            .first()
        )
        previous = latest or (0, "")
    number, previous_content = previous
    ratio = change_ratio(previous_content if number else "", content)
    row = {"session_id": session.pk, "number": number + 1, "content": content, "change_ratio": ratio, "note": note}
    # A plain INSERT (atelier.core.sql): one per turn that changes the document (issue 15).
    version = create_rows(DocumentVersion, [{**row, "turn_id": turn.pk if turn is not None else None}])[0]
    session.document = content
    if save_document:
        WritingSession.objects.filter(pk=session.pk).update(document=content)
    return version
