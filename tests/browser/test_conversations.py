"""Conversations in real Chromium, against real daphne and a django-q2 worker on the offline Demo provider:
start a conversation, watch the handoff line and the specialist's reply stream, reload mid-stream without
losing text, find an old message by search, delete the conversation.

Run separately: DJANGO_ALLOW_ASYNC_UNSAFE=true pytest tests/browser/test_conversations.py
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import make_user

PASSWORD = "correct horse battery staple"
EMAIL = "chatter@example.com"
STREAM_JS = """() => {
  const s = document.querySelector('[data-testid=chat-stream]');
  return s ? {id: s.id, text: s.querySelector('.stream-text').textContent} : null;
}"""


# Daphne and a worker whose Demo model writes slowly (~8 tokens a second): a reply lasts several seconds.
pytestmark = pytest.mark.live_app(seed=True, DEMO_TOKENS_PER_SECOND="8")


def squash(text: str) -> str:
    return " ".join(text.split())


def test_chat_with_the_writing_desk_handoff_stream_reload_search_and_delete(live_app, page, login):
    from playwright.sync_api import expect

    from orchestration.models import Conversation, Project, ReferenceDocument, WritingSession
    from orchestration.retrieval import index_references

    user = make_user(EMAIL, password=PASSWORD)
    project = Project.objects.create(owner=user, name="Street trees")
    source = WritingSession.objects.create(project=project, title="Essay", brief="Trees")
    reference = ReferenceDocument.objects.create(
        session=source,
        title="Shade study",
        content="Street trees shade pavements and cut summer surface temperatures by up to 11 degrees.",
    )
    index_references([reference])
    login(page, live_app, EMAIL, PASSWORD)

    # From the project page to a new conversation.
    page.goto(f"{live_app.url}/projects/{project.pk}/")
    page.get_by_test_id("project-conversations").click()
    page.get_by_test_id("conversation-new").click()
    expect(page.get_by_test_id("conversation-title")).to_have_text("New conversation")
    page.wait_for_function("() => document.getElementById('chat').dataset.connected === 'true'")

    # Ask for sources: triage hands off (the line says to whom and why), research searches and streams.
    page.get_by_test_id("chat-input").fill("Can you find sources on street trees and summer temperatures?")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-input")).to_have_value("")
    expect(page.locator("[data-testid=chat-message][data-role=user]")).to_contain_text("find sources on street trees")
    handoff = page.get_by_test_id("chat-handoff")
    expect(handoff).to_contain_text("Triage handed to Research specialist", timeout=30_000)
    expect(handoff).to_contain_text("sources")
    expect(page.get_by_test_id("chat-tool")).to_contain_text("search_references", timeout=30_000)
    page.wait_for_function(
        f"() => {{ const s = ({STREAM_JS})(); return s && s.text.trim().length > 40; }}", timeout=30_000
    )
    before = page.evaluate(STREAM_JS)
    expect(page.get_by_test_id("chat-stop")).to_be_visible()

    # Reload while the reply streams: the text so far is back, once, and keeps growing.
    page.reload()
    page.wait_for_function("() => document.getElementById('chat').dataset.connected === 'true'")
    stream = page.locator(f"#{before['id']} .stream-text")
    assert stream.count() == 1, "the reply finished before the reload: the test did not reload mid-stream"
    after = squash(stream.text_content())
    assert after.startswith(squash(before["text"])) and after.count(squash(before["text"])) == 1
    reply = page.locator("[data-testid=chat-message][data-role=assistant]").last
    expect(reply).to_contain_text("Research specialist", timeout=60_000)
    expect(reply).to_contain_text("cut summer surface temperatures")
    assert squash(reply.locator(".chat-body").text_content()).startswith(squash(before["text"]).replace("*", "")[:30])
    assert page.get_by_test_id("chat-stream").count() == 0
    expect(page.get_by_test_id("chat-regenerate")).to_be_visible()
    assert page.get_by_test_id("chat-handoff").count() == 1  # nothing duplicated by the reload

    # Search finds the old message from the Conversations page.
    page.goto(f"{live_app.url}/conversations/")
    page.get_by_test_id("conversation-search").fill("pavements")  # only in the specialist's reply
    page.get_by_role("button", name="Search").click()
    hit = page.get_by_test_id("conversation-hit").first
    expect(hit).to_contain_text("Research specialist: ")
    expect(hit).to_contain_text("Street trees shade pavements")
    hit.get_by_role("link").click()
    expect(page).to_have_url(re.compile(r".*/conversations/\d+/#message-\d+$"))

    # Delete removes it: gone from the list and from search.
    page.get_by_test_id("conversation-delete").click()
    page.get_by_test_id("conversation-delete-confirm").click()
    expect(page.locator(".flash")).to_contain_text("Deleted the conversation")
    assert not Conversation.objects.exists()
    page.goto(f"{live_app.url}/conversations/?q=pavements")
    expect(page.get_by_test_id("conversation-no-hits")).to_be_visible()
