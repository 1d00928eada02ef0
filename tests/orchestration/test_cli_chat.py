"""CLI parity for conversations: `manage.py chat` sends messages to the Writing desk (the offline demo
provider), runs each reply in-process and prints it streaming under the answering agent's label, with
handoffs and tool calls as lines; stdin lines are successive messages; refusals are clear errors."""

from __future__ import annotations

import io

import pytest

from orchestration.conversations.models import Conversation, Message
from orchestration.models import Status, Turn, WritingSession
from tests.conftest import make_user
from tests.orchestration.test_commands import run, run_failing

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chatter(settings):
    from billing.services import grant_credits
    from orchestration.catalogue import seed_catalogue
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 0
    clear_adapter_cache()
    seed_catalogue()
    user = make_user("chat@example.com")
    grant_credits(user=user, amount=100_000, key="test:chat", description="test credits")
    yield user
    clear_adapter_cache()


def test_chat_streams_the_reply_under_each_agents_label_with_the_handoff(chatter, monkeypatch):
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda session_id: None)  # run here, not in a worker
    out, _ = run("chat", "--user", chatter.email, "Can you find sources on street trees and summer heat?")

    conversation = Conversation.objects.get(project__owner=chatter)
    session = WritingSession.objects.get(pk=conversation.session_id)
    assert session.status == Status.COMPLETED
    handoff = Message.objects.get(conversation=conversation, role="handoff")
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert f"→ {handoff.data['from_name']} handed to {handoff.data['to_name']}" in out
    streamed = [t for t in Turn.objects.filter(session=session, kind=Turn.Kind.AGENT) if t.output_text.strip()]
    assert streamed
    for turn in streamed:  # each call's text streamed under its agent's label (a handoff alone has no text)
        assert f"[{turn.agent_name}] {turn.output_text.strip()[:40]}" in out
    tool = Message.objects.get(conversation=conversation, role="tool")
    assert f"[{tool.agent_name}] tool {tool.data['name']} → " in out
    assert f"[{reply.agent_name}] " in out and reply.content.strip()[:60] in out
    assert f"Conversation {conversation.pk}: 1 message(s) answered" in out


def test_chat_reads_messages_from_stdin_and_continues_a_conversation(chatter, monkeypatch):
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda session_id: None)
    monkeypatch.setattr("sys.stdin", io.StringIO("Please tighten this sentence: trees are good.\n\nThanks!\n"))
    out, _ = run("chat", "--user", chatter.email, "--no-stream", "--title", "Desk")
    conversation = Conversation.objects.get(project__owner=chatter, title="Desk")
    users = list(Message.objects.filter(conversation=conversation, role="user").values_list("content", flat=True))
    assert users == ["Please tighten this sentence: trees are good.", "Thanks!"]
    assert "2 message(s) answered" in out

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out, _ = run("chat", "--user", chatter.email, "--conversation", str(conversation.pk), "One more question?")
    assert Message.objects.filter(conversation=conversation, role="user").count() == 3
    assert f"Conversation {conversation.pk} 'Desk'" in out


def test_chat_refuses_another_users_conversation_unknown_users_and_presets(chatter):
    other = make_user("other@example.com")
    from orchestration.conversations.services import create_conversation
    from orchestration.models import Project

    theirs = create_conversation(project=Project.objects.create(owner=other, name="Theirs"), user=other)
    error, _, _ = run_failing("chat", "--user", chatter.email, "--conversation", str(theirs.pk), "hello")
    assert f"No conversation {theirs.pk}" in str(error)
    error, _, _ = run_failing("chat", "--user", "nobody@example.com", "hello")
    assert "No user with email" in str(error)
    error, _, _ = run_failing("chat", "--user", chatter.email, "--preset", "no-such-team", "hello")
    assert "Unknown conversation preset" in str(error)
    assert not Message.objects.filter(conversation=theirs).exists()
