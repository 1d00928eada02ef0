"""The Writing desk on the offline Demo provider: what a newcomer without keys sees."""

from __future__ import annotations

import pytest

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import ReferenceDocument, Status, Turn, WritingSession
from orchestration.retrieval import index_references

pytestmark = pytest.mark.django_db(transaction=True)


def reply(conversation, user, text: str) -> list:
    conversations.send_message(conversation=conversation, user=user, text=text)
    assert runner.drive(conversation.session_id) == "finished"
    return conversations.transcript(conversation)


def test_triage_hands_to_research_which_searches_the_references_and_answers(
    providers, enqueued, conversation, funded_owner
):
    session = conversation.session
    source = WritingSession.objects.create(project=conversation.project, title="Essay", brief="Trees")
    reference = ReferenceDocument.objects.create(
        session=source, title="Shade study", content="Street trees cut summer surface temperatures by 11 degrees."
    )
    index_references([reference])
    transcript = reply(conversation, funded_owner, "Can you find sources on street trees and summer temperatures?")
    roles = [(m.role, m.agent_name) for m in transcript]
    assert roles == [
        ("user", ""),
        ("handoff", "Triage"),
        ("tool", "Research specialist"),
        ("assistant", "Research specialist"),
    ]
    handoff = transcript[1]
    assert handoff.data["to_name"] == "Research specialist" and "sources" in handoff.data["reason"]
    assert "Street trees cut summer surface temperatures" in transcript[2].data["result"]
    assert "Street trees cut summer surface temperatures" in transcript[3].content
    assert transcript[3].data["final"] is True
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert Turn.objects.filter(session=session, status="completed").count() == 3

    # A follow-up outside research: the specialist hands back, triage answers.
    transcript = reply(conversation, funded_owner, "Thanks! What else can the desk do?")
    latest = [m for m in transcript if m.exchange == 2]
    assert [(m.role, m.agent_name) for m in latest] == [
        ("user", ""),
        ("handoff", "Research specialist"),
        ("assistant", "Triage"),
    ]
    assert latest[1].data["back"] is True
