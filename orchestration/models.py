"""Projects, writing sessions, agents, turns, document versions and the model catalogue.

Models hold data and invariants only; workflows that touch several models live in services.py.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from orchestration.provider_table import DEMO as DEMO_PROVIDER
from orchestration.provider_table import PROVIDER_SPECS

# The catalogue's provider choices come from the one provider table (orchestration/provider_table.py).
PROVIDER_CHOICES = [(spec.name, spec.long_label) for spec in PROVIDER_SPECS]


class Reasoning(models.TextChoices):
    """How a catalogue model lets an agent think before it answers (docs/architecture.md, "Reasoning models")."""

    NONE = "", "No reasoning controls"
    THINKING_BUDGET = "thinking_budget", "Extended thinking with a token budget (Anthropic)"
    EFFORT = "effort", "Reasoning effort low / medium / high (OpenAI reasoning models)"


class ReasoningOutput(models.TextChoices):
    """What the API gives back of the model's reasoning, so the page can say what it shows."""

    FULL = "full", "The full reasoning text"
    SUMMARY = "summary", "A summary of the reasoning"
    HIDDEN = "hidden", "Only a count of reasoning tokens"


class ReasoningEffort(models.TextChoices):
    # OpenAI's `reasoning_effort` values that every reasoning model accepts.
    DEFAULT = "", "Model default"
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class LLMModel(models.Model):
    """One row of the model catalogue. Staff edit prices and multipliers in the admin."""

    provider = models.CharField(max_length=20, choices=PROVIDER_CHOICES)
    model_id = models.CharField(max_length=120, help_text="The id sent to the provider's API.")
    display_name = models.CharField(max_length=120)
    context_window = models.PositiveIntegerField(help_text="Tokens of input + output the model accepts.")
    max_output_tokens = models.PositiveIntegerField(default=8192)
    # USD per million tokens. Null means "not priced": such a model cannot be used.
    input_price_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    cached_input_price_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    output_price_per_mtok = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    credit_multiplier = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal("1.00"), validators=[MinValueValidator(Decimal("0"))]
    )
    reasoning = models.CharField(
        max_length=20,
        choices=Reasoning.choices,
        blank=True,
        default=Reasoning.NONE,
        help_text="Which reasoning control the model accepts. Only these models get the parameters.",
    )
    reasoning_output = models.CharField(
        max_length=10,
        choices=ReasoningOutput.choices,
        default=ReasoningOutput.FULL,
        help_text="What the API returns of the reasoning (shown to the agent's owner, labelled).",
    )
    supports_tools = models.BooleanField(
        default=True,
        help_text="Accepts tool / function calling. Conversations route by text for models without it.",
    )
    enabled = models.BooleanField(default=True)
    sort_order = models.PositiveIntegerField(default=100)

    class Meta:
        ordering = ["provider", "sort_order", "display_name"]
        constraints = [models.UniqueConstraint(fields=["provider", "model_id"], name="unique_provider_model")]
        verbose_name = "catalogue model"

    def __str__(self) -> str:
        return f"{self.display_name} ({self.get_provider_display()})"

    @property
    def is_priced(self) -> bool:
        return self.input_price_per_mtok is not None and self.output_price_per_mtok is not None

    @property
    def is_demo(self) -> bool:
        return self.provider == DEMO_PROVIDER


class Project(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=5000)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project_detail", args=[self.pk])


class Flow(models.TextChoices):
    SEQUENTIAL = "sequential", "Sequential turns"
    EDITORIAL = "editorial", "Writer, parallel editors, synthesizer"
    ROUNDTABLE = "roundtable", "Roundtable: parallel critics and a moderator"
    PIPELINE = "pipeline", "Research, plan, build, review"
    PLANNED = "planned", "Planner: a task graph run in parallel, verified and assembled"
    # The hidden session behind a conversation (orchestration.conversations): never listed as a session.
    CONVERSATION = "conversation", "Conversation: triage with handoffs"


# Flows a session is built with (builder, presets, team suggestions): all but a conversation's hidden run.
SESSION_FLOW_CHOICES = [(value, label) for value, label in Flow.choices if value != Flow.CONVERSATION]
SESSION_FLOWS = [value for value, _ in SESSION_FLOW_CHOICES]


class Status(models.TextChoices):
    DRAFT = "draft", "Draft"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSING = "pausing", "Pausing"
    PAUSED = "paused", "Paused"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


# Every allowed status change. Anything else is a bug and is refused by services.set_status.
ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    Status.DRAFT: {Status.QUEUED},
    Status.QUEUED: {Status.RUNNING, Status.PAUSING, Status.PAUSED, Status.STOPPING, Status.STOPPED, Status.FAILED},
    Status.RUNNING: {
        Status.QUEUED,
        Status.PAUSING,
        Status.PAUSED,
        Status.STOPPING,
        Status.STOPPED,
        Status.COMPLETED,
        Status.FAILED,
    },
    Status.PAUSING: {Status.PAUSED, Status.STOPPING, Status.STOPPED, Status.COMPLETED, Status.FAILED, Status.RUNNING},
    Status.PAUSED: {Status.QUEUED, Status.STOPPING, Status.STOPPED},
    Status.STOPPING: {Status.STOPPED, Status.FAILED},
    Status.STOPPED: {Status.QUEUED},  # continue for N more rounds
    Status.COMPLETED: {Status.QUEUED},  # continue for N more rounds
    Status.FAILED: {Status.QUEUED},  # retry after fixing the cause
}
ACTIVE_STATUSES = {Status.QUEUED, Status.RUNNING, Status.PAUSING, Status.STOPPING}
FINISHED_STATUSES = {Status.STOPPED, Status.COMPLETED, Status.FAILED}


class StopReason(models.TextChoices):
    MAX_ROUNDS = "max_rounds", "Reached the maximum number of rounds"
    SCORE_THRESHOLD = "score_threshold", "Reached the score threshold"
    CONVERGED = "converged", "The document converged"
    NO_HIGH_ISSUES = "no_high_issues", "No high-severity issues left"
    PIPELINE_DONE = "pipeline_done", "Researched, planned, built and reviewed"
    PLAN_DONE = "plan_done", "Every task of the plan ran and the document was assembled"
    AWAITING_APPROVAL = "awaiting_approval", "Waiting for you to approve the plan"
    BUDGET = "budget", "Spent the session's credit budget"
    OUT_OF_CREDITS = "out_of_credits", "Out of credits"
    USER_STOPPED = "user_stopped", "Stopped by you"
    USER_PAUSED = "user_paused", "Paused by you"
    STAFF_STOPPED = "staff_stopped", "Stopped by Atelier staff"
    STAFF_PAUSED = "staff_paused", "Paused by Atelier staff"
    ERROR = "error", "Failed"


class WritingSession(models.Model):
    """A run of an agent team on one document. The UI calls it a "session"."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sessions")
    title = models.CharField(max_length=200)
    flow = models.CharField(max_length=30, choices=Flow.choices, default=Flow.SEQUENTIAL)
    brief = models.TextField(max_length=20000, help_text="What the team should write.")
    document = models.TextField(blank=True, help_text="The working document.")
    final_document = models.TextField(blank=True)

    # Termination settings
    max_rounds = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(50)])
    score_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(10)],
        help_text="Stop when a weighted overall score (0-10) reaches this.",
    )
    threshold_agent = models.ForeignKey(
        "Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Only this agent's score counts; empty means any agent.",
    )
    convergence_percent = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Stop when a round changes less than this percentage of the document.",
    )
    credit_budget = models.PositiveIntegerField(
        null=True, blank=True, help_text="Stop after spending this many credits."
    )
    # Flow-specific settings (e.g. the roundtable's convergence rules), validated by the flow's
    # policy (orchestration.flows.<flow>.clean_config); {} means the flow's defaults.
    flow_config = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True)
    current_round = models.PositiveIntegerField(default=0)
    stop_reason = models.CharField(max_length=30, choices=StopReason.choices, blank=True)
    stop_detail = models.TextField(blank=True)
    continued_at_round = models.PositiveIntegerField(
        default=0, help_text="Score and convergence checks only look at rounds after this (set by Continue)."
    )
    human_note = models.TextField(
        blank=True, max_length=10000, help_text="A note for the next turn, left while paused."
    )

    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Thinking / reasoning tokens; already included in output_tokens."
    )
    credits_used = models.PositiveBigIntegerField(default=0)
    provider_cost = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))

    # Execution: one executor at a time holds the lease; the watchdog re-dispatches expired ones.
    lease_owner = models.CharField(max_length=64, blank=True)
    # Not indexed: the engine renews it with every write to the row, and on PostgreSQL an UPDATE that changes an
    # indexed column cannot be HOT (a new entry in each of the table's indexes, every turn; issue 15). Nothing
    # looks sessions up by it: the watchdog reads the active ones by status (tasks.watchdog).
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveBigIntegerField(default=0, help_text="Sequence number of the last event.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("session_detail", args=[self.pk])

    @property
    def owner_id(self) -> int:
        return self.project.owner_id

    @property
    def progress_percent(self) -> int:
        return min(100, int(100 * self.current_round / max(self.max_rounds, 1)))

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class ReferenceDocument(models.Model):
    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="references")
    title = models.CharField(max_length=200)
    content = models.TextField()
    source_filename = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.title


class Passage(models.Model):
    """A chunk of a reference document, the unit the retriever searches and citations point at.

    ``text`` is exactly ``reference.content[start:end]`` (character offsets), so a citation can be
    shown in place. Rows are written only by orchestration.retrieval.index_references; the full-text
    index (SQLite FTS5 table kept in sync by triggers, or a PostgreSQL tsvector column with a GIN
    index) is created by migration 0008 and is not a Django field.
    """

    reference = models.ForeignKey(ReferenceDocument, on_delete=models.CASCADE, related_name="passages")
    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="passages")
    ordinal = models.PositiveIntegerField(help_text="Position within the reference, from 1.")
    heading = models.CharField(max_length=200, blank=True, help_text="The nearest Markdown heading above it.")
    text = models.TextField()
    start = models.PositiveIntegerField(help_text="Character offset of the passage in the reference.")
    end = models.PositiveIntegerField()

    class Meta:
        ordering = ["reference_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["reference", "ordinal"], name="unique_passage_ordinal")]
        indexes = [models.Index(fields=["session", "reference"], name="passage_session_ref")]

    def __str__(self) -> str:
        return f"{self.reference_id}#{self.ordinal}"


class Agent(models.Model):
    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="agents")
    order = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=80)
    role = models.CharField(max_length=40, default="writer", help_text="writer, editor, critic, ...")
    model = models.ForeignKey(LLMModel, on_delete=models.PROTECT, related_name="+")
    fallback_model = models.ForeignKey(LLMModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    role_prompt = models.TextField(max_length=20000)
    temperature = models.FloatField(default=0.7, validators=[MinValueValidator(0), MaxValueValidator(2)])
    max_output_tokens = models.PositiveIntegerField(
        default=2048, validators=[MinValueValidator(64), MaxValueValidator(64000)]
    )
    # 0 = thinking off. Anthropic: >= 1024 and below max_output_tokens (the budget is part of max_tokens).
    thinking_budget_tokens = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(63000)])
    reasoning_effort = models.CharField(
        max_length=10, choices=ReasoningEffort.choices, blank=True, default=ReasoningEffort.DEFAULT
    )
    active = models.BooleanField(default=True)
    # Conversation agents only: the information tools (orchestration/conversations/tools.py INFO_TOOLS
    # names) the agent may call; None = all of them. Handoff and ask_ tools come from the team, not this.
    tools = models.JSONField(null=True, blank=True, default=None)

    class Meta:
        ordering = ["order", "pk"]

    def __str__(self) -> str:
        return self.name


class Criterion(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="criteria")
    name = models.CharField(max_length=60)
    description = models.CharField(max_length=500, blank=True)
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(100)])
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "pk"]

    def __str__(self) -> str:
        return self.name


def turn_reservation_key(turn_id: int) -> str:
    """The idempotency key of the credit reservation a turn makes when it starts (billing ledger)."""
    return f"turn:{turn_id}:reserve"


class Turn(models.Model):
    class TurnStatus(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETED = "completed", "Completed"
        INCOMPLETE = "incomplete", "Incomplete (stream broke; retried)"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Stopped"
        # The call finished but the reply is not a usable document (docs/providers.md): kept, shown, never saved
        # as a version, and the session moves on to the next agent.
        TRUNCATED = "truncated", "Cut off"
        REFUSED = "refused", "Refused"

    class Kind(models.TextChoices):
        AGENT = "agent", "Agent"
        HUMAN = "human", "Human intervention"

    # Turns whose call ran to the provider's end: the flow moves past them (only COMPLETED ones carry a document).
    DONE_STATUSES = (TurnStatus.COMPLETED, TurnStatus.TRUNCATED, TurnStatus.REFUSED)
    TERMINAL_STATUSES = (*DONE_STATUSES, TurnStatus.INCOMPLETE, TurnStatus.FAILED, TurnStatus.CANCELLED)

    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="turns")
    round = models.PositiveIntegerField()
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="turns")
    agent_name = models.CharField(max_length=80, blank=True)  # kept if the agent is removed later
    attempt = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.AGENT)
    status = models.CharField(max_length=20, choices=TurnStatus.choices, default=TurnStatus.STREAMING)
    # What the flow asked of this call (see orchestration/flows/base.py): the slot within its round
    # ("write", "review:7", "synthesize"...), the prompt recipe and what the reply is for.
    slot = models.CharField(max_length=40, blank=True)
    recipe = models.CharField(max_length=20, blank=True, default="revise")
    output_kind = models.CharField(max_length=20, blank=True, default="document")
    # The reply's structured part, parsed like scores (issues, decisions, resolutions, and the tier
    # that produced them); {"given_up": true} marks a call the flow went on without.
    result = models.JSONField(default=dict, blank=True)
    model_used = models.CharField(max_length=120, blank=True)

    output_text = models.TextField(blank=True)
    # The model's thinking (Anthropic thinking blocks, `<think>` text of compatible models). Shown to the
    # owner only; never part of the document, the evaluation, a later prompt or an export.
    reasoning = models.TextField(blank=True, default="")
    # What the API returned of it (ReasoningOutput) when reasoning was asked for; "" otherwise.
    reasoning_output = models.CharField(max_length=10, choices=ReasoningOutput.choices, blank=True, default="")
    scores = models.JSONField(default=dict, blank=True)
    overall_score = models.FloatField(null=True, blank=True)
    parse_tier = models.CharField(max_length=20, blank=True)
    evaluation_raw = models.TextField(blank=True)
    feedback = models.TextField(blank=True, help_text="The evaluation's comments, passed to the next agent.")

    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(
        default=False, help_text="The provider reported no (or impossible) usage: the counts are estimated."
    )
    stop_reason = models.CharField(max_length=40, blank=True, help_text="The provider's own stop / finish reason.")
    reasoning_tokens = models.PositiveIntegerField(
        default=0, help_text="Thinking / reasoning tokens; already included in output_tokens (billed as output)."
    )
    credits = models.PositiveIntegerField(default=0)
    provider_cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    prompt_notes = models.TextField(blank=True, help_text="What was cut to fit the context window.")

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["round", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["session", "round", "agent", "attempt"], name="unique_turn_attempt")
        ]
        indexes = [models.Index(fields=["session", "round"])]

    def __str__(self) -> str:
        return f"Round {self.round} · {self.agent_name}"

    @property
    def call_finished(self) -> bool:
        """The provider finished the call (normally or not): its usage and charge are final and shown."""
        return self.status in self.DONE_STATUSES


class DocumentVersion(models.Model):
    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    content = models.TextField()
    turn = models.OneToOneField(Turn, null=True, blank=True, on_delete=models.SET_NULL, related_name="version")
    change_ratio = models.FloatField(
        default=1.0, help_text="0..1 share of the document changed vs. the previous version."
    )
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["session", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"v{self.number}"


class SessionEvent(models.Model):
    """Everything the live page needs, in order. Catch-up after a reconnect reads from here."""

    session = models.ForeignKey(WritingSession, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=30)
    turn = models.ForeignKey(Turn, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="unique_event_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind}"


class TeamPreset(models.Model):
    """A reusable team. owner=None means shipped with the product."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    slug = models.SlugField(max_length=80)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    flow = models.CharField(max_length=30, choices=Flow.choices, default=Flow.SEQUENTIAL)
    # {"agents": [{name, role, model: "provider:model_id", role_prompt, temperature, max_output_tokens,
    #   criteria: [{name, description, weight}]}], "max_rounds": 3, "score_threshold": 8.5, ...}
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [models.UniqueConstraint(fields=["owner", "slug"], name="unique_preset_slug")]

    def __str__(self) -> str:
        return self.name


# Conversations live in their own module; imported here so Django registers them with this app.
from orchestration.conversations.models import Conversation as Conversation  # noqa: E402
from orchestration.conversations.models import Message as Message  # noqa: E402
