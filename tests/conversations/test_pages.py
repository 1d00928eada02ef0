"""The conversation pages through Django's test client: list, create, chat, refusals, search, delete."""

from __future__ import annotations

import pytest
from django.urls import reverse

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HX-Request": "true"}


def test_start_a_conversation_send_a_message_and_read_the_reply(client, funded_owner, project, enqueued, providers):
    client.force_login(funded_owner)
    assert "Conversations" in client.get(reverse("project_detail", args=[project.pk])).content.decode()
    response = client.post(reverse("conversation_create", args=[project.pk]), {"title": ""})
    conversation = Conversation.objects.get()
    assert response.status_code == 302 and response.url == conversation.get_absolute_url()

    response = client.post(
        reverse("conversation_send", args=[conversation.pk]), {"text": "Find sources on trees"}, headers=HTMX
    )
    assert response.status_code == 200 and 'id="composer"' in response.content.decode()
    assert runner.drive(conversation.session_id) == "finished"
    page = client.get(conversation.get_absolute_url()).content.decode()
    assert "Find sources on trees" in page
    assert "handed to <strong>Research specialist</strong>" in page
    assert "search_references" in page  # the tool call is in the transcript
    assert "Demo (offline, not a language model)" in page


def test_model_output_is_sanitized_in_the_page(client, funded_owner, conversation):
    Message.objects.create(conversation=conversation, exchange=1, position=1, role="user", content="<b>hi</b>")
    Message.objects.create(
        conversation=conversation,
        exchange=1,
        position=2,
        role="assistant",
        content="**Bold** <script>alert(1)</script><img src=x onerror=alert(2)>",
        data={"final": True},
    )
    client.force_login(funded_owner)
    page = client.get(conversation.get_absolute_url()).content.decode()
    assert "<strong>Bold</strong>" in page
    assert "<script>alert(1)" not in page and "onerror" not in page
    assert "&lt;b&gt;hi&lt;/b&gt;" in page  # the user's own text is escaped, not rendered


def test_a_refused_message_comes_back_with_the_text_and_a_429(client, funded_owner, conversation, enqueued, settings):
    from billing import plans

    client.force_login(funded_owner)
    limit = plans.PLANS["free"].messages_per_minute
    for n in range(limit):
        Message.objects.create(conversation=conversation, exchange=n + 1, position=n + 1, role="user", content="x")
    response = client.post(
        reverse("conversation_send", args=[conversation.pk]), {"text": "My carefully written question"}, headers=HTMX
    )
    body = response.content.decode()
    assert response.status_code == 429
    assert "messages a minute" in body and "My carefully written question" in body
    assert Message.objects.count() == limit and enqueued == []


def test_search_page_finds_an_old_message_and_delete_removes_the_conversation(
    client, funded_owner, conversation, enqueued, providers
):
    conversations.rename_conversation(conversation=conversation, user=funded_owner, title="Street trees")
    conversations.send_message(conversation=conversation, user=funded_owner, text="Remember the hornbeam hedge")
    runner.drive(conversation.session_id)
    client.force_login(funded_owner)
    page = client.get(reverse("conversation_list"), {"q": "hornbeam"}).content.decode()
    assert "Street trees" in page and "hornbeam hedge" in page
    response = client.get(
        reverse("conversation_list"), {"q": "hornbeam"}, headers={**HTMX, "HX-Target": "conversation-results"}
    )
    assert response.content.decode().lstrip().startswith('<div id="conversation-results">')
    assert client.post(reverse("conversation_delete", args=[conversation.pk])).status_code == 302
    assert not Conversation.objects.exists()
    assert "No conversation mentions" in client.get(reverse("conversation_list"), {"q": "hornbeam"}).content.decode()
    assert client.get(conversation.get_absolute_url()).status_code == 404
