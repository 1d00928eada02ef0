"""A pipeline conversation: each message runs research -> plan -> build -> review, each stage a turn."""

from __future__ import annotations

import threading
import time

import pytest

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.models import SessionEvent, Status, Turn
from orchestration.services import ServiceError
from tests.conversations.conftest import on_model

pytestmark = pytest.mark.django_db(transaction=True)

RESEARCH = (
    "## Summary\nThe notes cover shade and storm water.\n\n## Findings\n"
    "- Street trees cut summer surface temperatures by up to 11 degrees [1].\n\n## Gaps\n- Nothing on cost.\n\n"
    '<evaluation>{"scores": {"Coverage": 8}, "feedback": "good"}</evaluation>'
)
OUTLINE = (
    "# Trees for shade\n\nOne point, sourced.\n\n<sections>\n"
    '[{"title": "Shade", "goal": "Show the cooling", "sources": [1]}]\n</sections>\n\n'
    '<evaluation>{"scores": {"Structure": 8}}</evaluation>'
)
DRAFT = "Street trees cool dense streets by up to 11 degrees [1]. Cities really should plant them."
BUILD = DRAFT + '\n\n<evaluation>{"scores": {"Fidelity": 8}}</evaluation>'
REVIEW = (
    "## Comments\nGood, one filler word.\n\n<flags>[]</flags>\n\n<edits>\n"
    '[{"find": "Cities really should plant them.", "replace": "Cities should plant them.", "reason": "filler"}]\n'
    "</edits>\n\n"
    '<evaluation>{"scores": {"Evidence": 9, "Clarity": 8, "Structure": 8}}</evaluation>'
)
REVIEWED = "Street trees cool dense streets by up to 11 degrees [1]. Cities should plant them."


def shape(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.data.get("stage") or m.agent_name) for m in conversations.transcript(conversation)]


FULL_REPLY = [("user", ""), ("stage", "research"), ("stage", "plan"), ("stage", "build"), ("stage", "review")]


def test_a_message_runs_the_four_stages_in_order_and_the_reply_is_the_reviewed_text(
    providers, enqueued, chat, pro_owner, provider
):
    on_model(chat, provider)
    providers.reply(RESEARCH, OUTLINE, BUILD, REVIEW)
    conversations.send_message(conversation=chat, user=pro_owner, text="Why do streets need trees for shade?")
    assert runner.drive(chat.session_id) == "finished"
    assert shape(chat) == [*FULL_REPLY, ("assistant", "Builder")]
    reply = conversations.transcript(chat)[-1]
    assert reply.content == REVIEWED and reply.data["final"] and reply.data["applied"] == 1
    # References are cited: the reply's [1] is listed with the reference it points at.
    assert reply.data["sources"] == [{"n": 1, "title": "Tree notes", "ordinal": 1, "heading": "Shade"}]
    research, plan, _build, review = [m for m in conversations.transcript(chat) if m.role == "stage"]
    assert research.data["summary"] == "1 finding from 1 passage, citing [1]"
    assert "Shade" in plan.content and review.data["summary"].startswith("scored 8.")

    requests = providers.generation_requests()
    assert len(requests) == 4
    assert "You are the researcher of a pipeline" in requests[0].system_text
    assert "[1] Tree notes, passage 1 (Shade)" in requests[0].system_text  # the retriever's passages, numbered
    assert "Street trees cut summer surface temperatures" in requests[0].system_text
    assert "Why do streets need trees for shade?" in requests[0].system_text  # the message is the brief
    assert "You are the planner of a pipeline" in requests[1].system_text
    assert "The notes cover shade and storm water." in requests[1].user_text  # the research, as material
    assert "Show the cooling" in requests[2].user_text and "length: about 400 words" in requests[2].user_text
    assert DRAFT in requests[3].user_text  # the reviewer reads the draft as the document

    turns = list(Turn.objects.filter(session=chat.session).order_by("pk"))
    assert [(t.recipe, t.status) for t in turns] == [
        ("research", "completed"),
        ("outline", "completed"),
        ("build", "completed"),
        ("review", "completed"),
    ]
    assert all(t.credits > 0 for t in turns) and turns[3].overall_score is not None
    assert turns[0].result["cited"] == [1]
    # Every stage streamed: its text arrived as chunk events of its turn before it was saved.
    chunks = SessionEvent.objects.filter(turn=turns[2], kind="chunk")
    assert "".join(e.payload["text"] for e in chunks) == BUILD
    chat.session.refresh_from_db()
    assert chat.session.status == Status.COMPLETED and chat.session.credits_used == sum(t.credits for t in turns)


def test_follow_ups_carry_the_conversation_and_regenerate_and_edit_rerun_the_stages(
    providers, enqueued, chat, pro_owner, provider
):
    on_model(chat, provider)
    providers.reply(RESEARCH, OUTLINE, BUILD, REVIEW)
    conversations.send_message(conversation=chat, user=pro_owner, text="Why do streets need trees for shade?")
    assert runner.drive(chat.session_id) == "finished"

    providers.reply(RESEARCH, OUTLINE, "A second answer [1].", REVIEW)
    conversations.send_message(conversation=chat, user=pro_owner, text="And what about storm water?")
    assert runner.drive(chat.session_id) == "finished"
    follow_up = providers.generation_requests()[4]
    assert "And what about storm water?" in follow_up.system_text
    assert "The conversation so far" in follow_up.system_text
    assert "Writer: Why do streets need trees for shade?" in follow_up.system_text
    assert f"Reply: {REVIEWED}" in follow_up.system_text
    assert conversations.transcript(chat)[-1].content == "A second answer [1]."  # no edit matched: the draft

    providers.reply(RESEARCH, OUTLINE, "A regenerated answer [1].", REVIEW)
    conversations.regenerate_reply(conversation=chat, user=pro_owner)
    assert runner.drive(chat.session_id) == "finished"
    second = [m for m in conversations.transcript(chat) if m.exchange == 2]
    assert [(m.role, m.data.get("stage") or m.agent_name) for m in second] == [*FULL_REPLY, ("assistant", "Builder")]
    assert second[-1].content == "A regenerated answer [1]."
    assert len(providers.generation_requests()) == 12  # every stage ran again

    providers.reply(RESEARCH, OUTLINE, "About roots instead [1].", REVIEW)
    conversations.edit_last_message(conversation=chat, user=pro_owner, text="And what about roots?")
    assert runner.drive(chat.session_id) == "finished"
    last = [m for m in conversations.transcript(chat) if m.exchange == 2]
    assert last[0].content == "And what about roots?" and last[-1].content == "About roots instead [1]."
    assert "storm water" not in providers.generation_requests()[-4].system_text.split("## The conversation so far")[0]
    assert len([m for m in conversations.transcript(chat) if m.role == "assistant"]) == 2


def test_stop_mid_stage_keeps_the_text_and_ends_the_reply(providers, enqueued, chat, pro_owner, provider):
    on_model(chat, provider)
    providers.reply(RESEARCH)
    providers.tokens_per_second = 20
    providers.reply("word " * 400)
    conversations.send_message(conversation=chat, user=pro_owner, text="Why do streets need trees for shade?")
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(runner.drive(chat.session_id)))
    worker.start()
    deadline = time.monotonic() + 30
    while not SessionEvent.objects.filter(session=chat.session, kind="chunk", turn__recipe="outline").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert conversations.stop_reply(conversation=chat, user=pro_owner)
    worker.join(timeout=30)
    assert outcome == ["stopped"]
    assert shape(chat) == [("user", ""), ("stage", "research"), ("stage", "plan")]
    plan = conversations.transcript(chat)[-1]
    assert plan.status == "stopped" and plan.content.startswith("word") and len(plan.content) < len("word " * 400)
    chat.session.refresh_from_db()
    assert chat.session.status == Status.STOPPED
    assert providers.client_disconnected.wait(5)  # the HTTP stream was closed, not read to the end
    turns = list(Turn.objects.filter(session=chat.session).order_by("pk"))
    assert [(t.recipe, t.status) for t in turns] == [("research", "completed"), ("outline", "cancelled")]
    assert turns[1].output_text == plan.content


def test_the_demo_desk_answers_offline_and_says_what_it_is(providers, enqueued, chat, pro_owner):
    conversations.send_message(conversation=chat, user=pro_owner, text="Why do cities need street trees for shade?")
    assert runner.drive(chat.session_id) == "finished"
    assert shape(chat) == [*FULL_REPLY, ("assistant", "Builder")]
    reply = conversations.transcript(chat)[-1]
    assert reply.content.startswith("*Demo (offline, not a language model).*")
    assert "Street trees cut summer surface temperatures by up to 11 degrees" in reply.content
    assert "[1]" in reply.content and reply.data["sources"][0]["title"] == "Tree notes"


def test_the_pipeline_flow_is_gated_by_plan_and_switching_keeps_the_transcript(
    providers, enqueued, project, funded_owner, references
):
    with pytest.raises(ServiceError, match="pipeline flow"):
        conversations.create_conversation(project=project, user=funded_owner, preset="pipeline-desk")
    chat = conversations.create_conversation(project=project, user=funded_owner)
    with pytest.raises(ServiceError, match="pipeline flow"):
        conversations.switch_flow(conversation=chat, user=funded_owner, flow="pipeline")

    from billing.plans import STARTER
    from billing.services import get_account

    account = get_account(funded_owner)
    account.plan = STARTER
    account.save(update_fields=["plan"])
    conversations.send_message(conversation=chat, user=funded_owner, text="Hello there")
    with pytest.raises(ServiceError, match="still being written"):
        conversations.switch_flow(conversation=chat, user=funded_owner, flow="pipeline")
    assert runner.drive(chat.session_id) == "finished"
    conversations.switch_flow(conversation=chat, user=funded_owner, flow="pipeline")
    assert [a.role for a in conversations.team(chat)] == ["researcher", "planner", "builder", "reviewer"]
    conversations.send_message(conversation=chat, user=funded_owner, text="Why do cities need trees for shade?")
    assert runner.drive(chat.session_id) == "finished"
    assert [m.role for m in conversations.transcript(chat)] == [
        "user",
        "assistant",
        "user",
        "stage",
        "stage",
        "stage",
        "stage",
        "assistant",
    ]
    conversations.switch_flow(conversation=chat, user=funded_owner, flow="triage")
    assert conversations.team(chat)[0].role == "triage" and len(conversations.team(chat)) == 4
    conversations.send_message(conversation=chat, user=funded_owner, text="Thanks, what else?")
    assert runner.drive(chat.session_id) == "finished"
    assert conversations.transcript(chat)[-1].agent_name == "Triage"
    pipeline_agent = conversations.team(chat)[0]
    conversations.switch_flow(conversation=chat, user=funded_owner, flow="pipeline")
    with pytest.raises(ServiceError, match="four stages"):  # the team page cannot break the pipeline's team
        conversations.add_specialist(conversation=chat, user=funded_owner, kind="data")
    reviewer = next(a for a in conversations.team(chat) if a.role == "reviewer")
    with pytest.raises(ServiceError, match="four stages"):
        conversations.remove_specialist(conversation=chat, user=funded_owner, agent_id=reviewer.pk)
    assert pipeline_agent.role == "triage"
    with pytest.raises(ServiceError, match="triage flow or the pipeline flow"):
        conversations.switch_flow(conversation=chat, user=funded_owner, flow="roundtable")
