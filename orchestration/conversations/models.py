"""Conversation and Message tables (app label "orchestration"; imported by orchestration.models).

A conversation is backed by one WritingSession (flow "conversation") that is never listed as a session:
it carries the conversation's agents (triage + specialists, configured like any agent), its turns (one
per model call, charged like any call), its numbered event log (the chat page's live stream and
catch-up) and its executor lease. Messages are the durable transcript.
"""

from __future__ import annotations

from django.db import models
from django.urls import reverse


class ConversationFlow(models.TextChoices):
    """What answers each user message: the triage desk (handoffs) or the research -> plan -> build -> review
    pipeline (orchestration/conversations/pipeline.py)."""

    TRIAGE = "triage", "Triage with handoffs"
    PIPELINE = "pipeline", "Research, plan, build, review"


class Conversation(models.Model):
    project = models.ForeignKey("orchestration.Project", on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200)
    session = models.OneToOneField(
        "orchestration.WritingSession", on_delete=models.CASCADE, related_name="conversation"
    )
    flow = models.CharField(max_length=12, choices=ConversationFlow.choices, default=ConversationFlow.TRIAGE)
    max_handoffs = models.PositiveSmallIntegerField(
        default=3, help_text="Handoffs allowed per user message; then the current agent answers."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # A rolling summary of the earliest exchanges, written by a model call when they no longer fit the
    # context window (conversations/flow.py): it covers exchanges 1..summary_through, and later prompts send
    # it instead of those messages. Extended (not rewritten from scratch) when more exchanges must go.
    summary = models.TextField(blank=True)
    summary_through = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["project", "-updated_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("conversation_detail", args=[self.pk])

    @property
    def owner_id(self) -> int:
        return self.project.owner_id


class MessageRole(models.TextChoices):
    USER = "user", "You"
    ASSISTANT = "assistant", "Reply"
    HANDOFF = "handoff", "Handoff"
    TOOL = "tool", "Tool call"
    NOTE = "note", "Note"
    STAGE = "stage", "Pipeline stage"  # one stage of a pipeline reply: research, plan, build or review


class MessageStatus(models.TextChoices):
    COMPLETED = "completed", "Completed"
    PENDING = "pending", "Waiting for its result"  # an agent-as-tool call whose specialist has not answered yet
    STOPPED = "stopped", "Stopped"  # the user pressed Stop: the text so far is kept
    CUT_OFF = "cut_off", "Cut off"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"


class Message(models.Model):
    """One entry of the transcript.

    `exchange` numbers the user's messages (1, 2, ...); everything that answers a user message shares its
    exchange. `position` orders the whole transcript. `superseded` entries (a regenerated reply, an edited
    message and what answered it) are hidden from the page and from later prompts but kept.
    `data`: role "handoff" {"from", "to", "from_name", "to_name", "reason", "back": bool, "capped": bool};
    role "tool" {"name", "arguments", "result", "call_id", "agent_tool": bool}; role "assistant"
    {"final": bool, "stop_reason"} (a pipeline's final reply adds "sources" [{n, title, ordinal, heading}],
    "reviewed_by", "applied"); role "note" {"kind"}; role "stage" {"stage", "label", "summary", "final"}.
    """

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    exchange = models.PositiveIntegerField()
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=12, choices=MessageRole.choices)
    status = models.CharField(max_length=12, choices=MessageStatus.choices, default=MessageStatus.COMPLETED)
    agent = models.ForeignKey("orchestration.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_name = models.CharField(max_length=80, blank=True)
    content = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    # The model call that produced it (a reply, a handoff or a tool call); unique per role so a call
    # re-run after a crash never adds its messages twice.
    turn = models.ForeignKey("orchestration.Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    superseded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "position"], name="unique_message_position"),
        ]
        indexes = [models.Index(fields=["conversation", "exchange"])]

    def __str__(self) -> str:
        return f"{self.get_role_display()} #{self.position}"
