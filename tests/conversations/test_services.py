"""Conversation services: create, rename, delete, full-text search, limits and ownership."""

from __future__ import annotations

import pytest

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import Conversation, Message, Project, Status, WritingSession
from orchestration.services import ServiceError

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_new_conversation_has_the_writing_desk_and_is_no_session(conversation, project, funded_owner):
    team = conversations.team(conversation)
    assert [(a.name, a.role) for a in team] == [
        ("Triage", "triage"),
        ("Research specialist", "specialist"),
        ("Editing specialist", "specialist"),
        ("Fact-check specialist", "specialist"),
    ]
    assert all(a.model.provider == "demo" for a in team)
    assert conversation.session.flow == "conversation"
    assert conversation.session.status == Status.DRAFT


def test_first_message_titles_the_conversation_and_queues_one_run(conversation, funded_owner, enqueued):
    message = conversations.send_message(conversation=conversation, user=funded_owner, text="  Help me edit my intro ")
    assert message.content == "Help me edit my intro" and message.exchange == 1
    conversation.refresh_from_db()
    assert conversation.title == "Help me edit my intro"
    assert enqueued == [conversation.session_id]
    with pytest.raises(ServiceError, match="still being written"):
        conversations.send_message(conversation=conversation, user=funded_owner, text="another")
    assert Message.objects.filter(conversation=conversation).count() == 1


@pytest.mark.parametrize("text", ["", "   ", "x" * 20_001])
def test_empty_or_oversized_messages_are_refused_and_nothing_is_saved(conversation, funded_owner, enqueued, text):
    with pytest.raises(ServiceError):
        conversations.send_message(conversation=conversation, user=funded_owner, text=text)
    assert not Message.objects.exists() and enqueued == []


def test_messages_per_minute_limit_is_a_429_and_loses_nothing(conversation, funded_owner, enqueued, providers):
    # Free plan: 6 messages a minute.
    for n in range(6):
        conversations.send_message(conversation=conversation, user=funded_owner, text=f"Message {n} about trees")
        assert runner.drive(conversation.session_id) == "finished"
    with pytest.raises(conversations.RateLimited, match="6 messages a minute") as refused:
        conversations.send_message(conversation=conversation, user=funded_owner, text="one more")
    assert refused.value.status_code == 429
    assert Message.objects.filter(role="user").count() == 6


def test_concurrent_replies_limit(project, funded_owner, enqueued):
    first = conversations.create_conversation(project=project, user=funded_owner)
    second = conversations.create_conversation(project=project, user=funded_owner)
    conversations.send_message(conversation=first, user=funded_owner, text="Hello")
    with pytest.raises(conversations.RateLimited, match="1 reply at a time"):
        conversations.send_message(conversation=second, user=funded_owner, text="Hello too")
    assert not second.messages.exists()


def test_search_finds_titles_and_message_text_with_stemming(conversation, funded_owner, enqueued, providers, outsider):
    conversations.rename_conversation(conversation=conversation, user=funded_owner, title="Canopy planning")
    conversations.send_message(conversation=conversation, user=funded_owner, text="Where are the oak saplings sourced?")
    runner.drive(conversation.session_id)
    by_title = conversations.search(user=funded_owner, query="canopy")
    assert [(h.conversation_id, h.message_id) for h in by_title] == [(conversation.pk, None)]
    hits = conversations.search(user=funded_owner, query="sapling")
    assert hits and hits[0].conversation_id == conversation.pk and "oak saplings" in hits[0].snippet
    assert conversations.search(user=funded_owner, query="elephants") == []
    assert conversations.search(user=funded_owner, query='"); DROP TABLE x; --') == []
    assert conversations.search(user=outsider, query="sapling") == []  # someone else's conversation


def test_search_skips_superseded_messages(conversation, funded_owner, enqueued, providers):
    conversations.rename_conversation(conversation=conversation, user=funded_owner, title="Trees")
    conversations.send_message(conversation=conversation, user=funded_owner, text="Tell me about magnolias")
    runner.drive(conversation.session_id)
    conversations.edit_last_message(conversation=conversation, user=funded_owner, text="Tell me about birches")
    runner.drive(conversation.session_id)
    assert conversations.search(user=funded_owner, query="magnolias") == []
    assert conversations.search(user=funded_owner, query="birches")


def test_rename_and_delete_are_owner_only_and_delete_removes_everything(conversation, funded_owner, outsider):
    with pytest.raises(ServiceError):
        conversations.rename_conversation(conversation=conversation, user=outsider, title="Mine now")
    with pytest.raises(ServiceError):
        conversations.delete_conversation(conversation=conversation, user=outsider)
    with pytest.raises(ServiceError, match="title"):
        conversations.rename_conversation(conversation=conversation, user=funded_owner, title="   ")
    with pytest.raises(ServiceError):
        conversations.send_message(conversation=conversation, user=outsider, text="hi")
    with pytest.raises(Conversation.DoesNotExist):
        conversations.get_conversation(user=outsider, pk=conversation.pk)
    session_id = conversation.session_id
    conversations.delete_conversation(conversation=conversation, user=funded_owner)
    assert not Conversation.objects.exists() and not WritingSession.objects.filter(pk=session_id).exists()


def test_conversation_sessions_are_not_counted_as_sessions(conversation, funded_owner):
    from billing.gating import check

    Project.objects.create(owner=funded_owner, name="Other")
    assert check(funded_owner, "run_concurrently").allowed


def test_deleting_a_conversation_mid_reply_gives_back_the_held_credits(conversation, funded_owner):
    from billing.services import get_balance, reserve_credits
    from orchestration.models import Turn

    before = get_balance(funded_owner)
    triage = conversations.team(conversation)[0]
    turn = Turn.objects.create(session=conversation.session, round=1, agent=triage, agent_name=triage.name)
    reserve_credits(user=funded_owner, amount=250, key=f"turn:{turn.pk}:reserve", turn_id=turn.pk)
    assert get_balance(funded_owner) == before - 250
    conversations.delete_conversation(conversation=conversation, user=funded_owner)
    assert get_balance(funded_owner) == before
