"""Staff tools for the orchestration app: the model catalogue, sessions and their history.

Records of what happened (turns, events) are read-only: they are evidence for support and billing.
Actions that change a session go through orchestration.services, like every other write.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Exists, Model, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from orchestration.catalogue import unpriced_error
from orchestration.conversations.models import Conversation, Message
from orchestration.models import (
    Agent,
    Criterion,
    DocumentVersion,
    LLMModel,
    Project,
    Reasoning,
    ReasoningOutput,
    ReferenceDocument,
    SessionEvent,
    TeamPreset,
    Turn,
    WritingSession,
)
from orchestration.provider_table import provider_spec


class ReadOnlyAdminMixin:
    """Viewable, never editable or addable by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def _annotated(obj: Model, name: str) -> int:
    """A count or flag that the changelist's queryset annotated on ``obj`` (see each get_queryset)."""
    value: int = getattr(obj, name)
    return value


# --------------------------------------------------------------------------------------------------
# Model catalogue
# --------------------------------------------------------------------------------------------------


class LLMModelForm(forms.ModelForm[LLMModel]):
    """Refuses to enable a model without prices: an unpriced model must never be chosen by a user."""

    class Meta:
        model = LLMModel
        fields = (
            "provider",
            "model_id",
            "display_name",
            "context_window",
            "max_output_tokens",
            "input_price_per_mtok",
            "cached_input_price_per_mtok",
            "output_price_per_mtok",
            "credit_multiplier",
            "reasoning",
            "reasoning_output",
            "enabled",
            "sort_order",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "reasoning_output" in self.fields:
            # Only meaningful with a reasoning control; left empty it means the full text.
            self.fields["reasoning_output"].required = False

    def clean_reasoning_output(self) -> str:
        return str(self.cleaned_data.get("reasoning_output") or ReasoningOutput.FULL)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what Form.clean() returns (django-stubs allows None)
        # Each control exists in one wire protocol only (docs/architecture.md, "Reasoning models").
        provider = cleaned.get("provider", self.instance.provider)
        reasoning = cleaned.get("reasoning", self.instance.reasoning)
        spec = provider_spec(provider)
        if reasoning == Reasoning.THINKING_BUDGET and not (spec and spec.thinking_budget):
            self.add_error("reasoning", "Extended thinking with a budget is an Anthropic parameter.")
        if reasoning == Reasoning.EFFORT and not (spec is None or spec.reasoning_effort):
            self.add_error("reasoning", "Reasoning effort is an OpenAI-protocol parameter.")
        enabled = cleaned.get("enabled", self.instance.enabled)
        if enabled:
            probe = LLMModel(
                provider=cleaned.get("provider", self.instance.provider),
                model_id=cleaned.get("model_id", self.instance.model_id),
                display_name=cleaned.get("display_name", self.instance.display_name),
                input_price_per_mtok=cleaned.get("input_price_per_mtok", self.instance.input_price_per_mtok),
                output_price_per_mtok=cleaned.get("output_price_per_mtok", self.instance.output_price_per_mtok),
            )
            error = unpriced_error(probe)
            if error:
                raise forms.ValidationError(
                    f"{error} Set the input and output prices (0 is a price) or leave the model disabled."
                )
        return cleaned


@admin.register(LLMModel)
class LLMModelAdmin(admin.ModelAdmin[LLMModel]):
    form = LLMModelForm
    list_display = (
        "display_name",
        "provider",
        "model_id",
        "context_window",
        "input_price_per_mtok",
        "cached_input_price_per_mtok",
        "output_price_per_mtok",
        "credit_multiplier",
        "reasoning",
        "supports_tools",
        "enabled",
        "in_use",
        "provider_state",
        "router_telemetry",
    )
    list_display_links = ("display_name",)
    list_editable = (
        "input_price_per_mtok",
        "cached_input_price_per_mtok",
        "output_price_per_mtok",
        "credit_multiplier",
        "enabled",
    )
    list_filter = ("provider", "enabled", "reasoning")
    search_fields = ("display_name", "model_id")
    ordering = ("provider", "sort_order", "display_name")
    actions = ("disable_models",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[LLMModel]:
        # Agent.model has no reverse accessor (related_name="+"), so ask with a subquery.
        in_use = Agent.objects.filter(Q(model=OuterRef("pk")) | Q(fallback_model=OuterRef("pk")))
        return super().get_queryset(request).annotate(_in_use=Exists(in_use))

    def get_changelist_form(self, request: HttpRequest, **kwargs: Any) -> type[forms.ModelForm[LLMModel]]:
        # Without this the changelist's inline editing would skip the form's price check.
        kwargs.setdefault("form", LLMModelForm)
        return super().get_changelist_form(request, **kwargs)

    @admin.display(description="Provider on this server")
    def provider_state(self, obj: LLMModel) -> str:
        """Staff see the operator's detail (which setting is missing); users only see "not connected"."""
        from orchestration.providers import provider_configured

        ok, reason = provider_configured(obj.provider)
        return ("✓ " if ok else "✗ ") + reason

    @admin.display(description="Router telemetry (14 days)")
    def router_telemetry(self, obj: LLMModel) -> str:
        """What the planned flow's router measures for this model (orchestration/model_router.py): success
        rate, median latency, cost per 1,000 output tokens and the calls behind them, across every session."""
        from orchestration import model_router

        t = model_router.telemetry([obj.model_id]).get(obj.model_id)
        if t is None or not t.samples:
            return "No calls yet (the router uses the catalogue)"
        parts = [f"{t.success_rate:.0%} ok of {t.samples} calls ({t.failures} failed)"]
        if t.median_latency_s is not None:
            parts.append(f"median {t.median_latency_s:.1f} s")
        if t.usd_per_1k_output is not None:
            parts.append(f"${t.usd_per_1k_output:.4f} / 1k output tokens")
        if t.samples < model_router.MIN_SAMPLES:
            parts.append("too few calls: the router uses the catalogue")
        return "; ".join(parts)

    @admin.display(description="Used by agents", boolean=True, ordering="_in_use")
    def in_use(self, obj: LLMModel) -> bool:
        return bool(_annotated(obj, "_in_use"))

    @admin.action(description="Disable selected models (existing agents keep them until edited)")
    def disable_models(self, request: HttpRequest, queryset: QuerySet[LLMModel]) -> None:
        count = queryset.filter(enabled=True).update(enabled=False)
        self.message_user(request, ngettext("Disabled %d model.", "Disabled %d models.", count) % count)


# --------------------------------------------------------------------------------------------------
# Projects and sessions
# --------------------------------------------------------------------------------------------------


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    list_display = ("name", "owner", "session_count", "archived_at", "updated_at")
    list_select_related = ("owner",)
    list_filter = (("archived_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "owner__email", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return super().get_queryset(request).annotate(_session_count=Count("sessions"))

    @admin.display(description="Sessions", ordering="_session_count")
    def session_count(self, obj: Project) -> int:
        return _annotated(obj, "_session_count")


class AgentInline(admin.TabularInline[Agent, WritingSession]):
    model = Agent
    fields = ("order", "name", "role", "model", "fallback_model", "temperature", "max_output_tokens", "active")
    extra = 0
    show_change_link = True
    raw_id_fields = ("model", "fallback_model")


class ReferenceDocumentInline(admin.TabularInline[ReferenceDocument, WritingSession]):
    model = ReferenceDocument
    fields = ("title", "source_filename", "size")
    readonly_fields = ("title", "source_filename", "size")
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: WritingSession | None = None) -> bool:
        return False

    @admin.display(description="Characters")
    def size(self, obj: ReferenceDocument) -> str:
        return f"{len(obj.content):,}"


@admin.register(WritingSession)
class WritingSessionAdmin(admin.ModelAdmin[WritingSession]):
    list_display = (
        "title",
        "owner",
        "flow",
        "status",
        "round_display",
        "credits_used",
        "agent_count",
        "stop_reason",
        "created_at",
    )
    list_select_related = ("project__owner",)
    list_filter = ("status", "flow", "stop_reason")
    search_fields = ("title", "project__name", "project__owner__email")
    date_hierarchy = "created_at"
    raw_id_fields = ("project", "threshold_agent")
    inlines = (AgentInline, ReferenceDocumentInline)
    readonly_fields = (
        "status",
        "current_round",
        "stop_reason",
        "stop_detail",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "credits_used",
        "provider_cost",
        "lease_owner",
        "lease_expires_at",
        "last_seq",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    )
    fieldsets = (
        (None, {"fields": ("project", "title", "flow", "brief", "document", "final_document", "human_note")}),
        (
            "Termination",
            {"fields": ("max_rounds", "score_threshold", "threshold_agent", "convergence_percent", "credit_budget")},
        ),
        ("State", {"fields": ("status", "current_round", "stop_reason", "stop_detail")}),
        (
            "Totals",
            {"fields": ("input_tokens", "cached_tokens", "output_tokens", "credits_used", "provider_cost")},
        ),
        (
            "Execution",
            {
                "classes": ("collapse",),
                "fields": (
                    "lease_owner",
                    "lease_expires_at",
                    "last_seq",
                    "created_at",
                    "updated_at",
                    "started_at",
                    "finished_at",
                ),
            },
        ),
    )
    actions = ("stop_sessions", "pause_sessions")

    def get_queryset(self, request: HttpRequest) -> QuerySet[WritingSession]:
        return super().get_queryset(request).annotate(_agent_count=Count("agents"))

    @admin.display(description="Owner", ordering="project__owner__email")
    def owner(self, obj: WritingSession) -> str:
        return obj.project.owner.email or obj.project.owner.get_username()

    @admin.display(description="Round", ordering="current_round")
    def round_display(self, obj: WritingSession) -> str:
        return f"{obj.current_round} / {obj.max_rounds}"

    @admin.display(description="Agents", ordering="_agent_count")
    def agent_count(self, obj: WritingSession) -> int:
        return _annotated(obj, "_agent_count")

    def _run_service(self, request: HttpRequest, queryset: QuerySet[WritingSession], action: str, verb: str) -> None:
        from orchestration import services  # lazy: services imports the engine and providers

        done = 0
        for session in queryset:
            try:
                getattr(services, action)(session=session, by_staff=request.user)
            except services.ServiceError as exc:
                self.message_user(request, f"“{session}”: {exc}", level=messages.WARNING)
            else:
                done += 1
        if done:
            self.message_user(request, ngettext(f"{verb} %d session.", f"{verb} %d sessions.", done) % done)

    @admin.action(description="Stop selected sessions (keeps what was written)")
    def stop_sessions(self, request: HttpRequest, queryset: QuerySet[WritingSession]) -> None:
        self._run_service(request, queryset, "stop_session", "Stopped")

    @admin.action(description="Pause selected sessions after the turn in flight")
    def pause_sessions(self, request: HttpRequest, queryset: QuerySet[WritingSession]) -> None:
        self._run_service(request, queryset, "pause_session", "Pausing")


class CriterionInline(admin.TabularInline[Criterion, Agent]):
    model = Criterion
    fields = ("order", "name", "description", "weight")
    extra = 0


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin[Agent]):
    list_display = ("name", "session", "role", "model", "order", "active", "criterion_count")
    list_select_related = ("session", "model")
    list_filter = ("active", "role", "model__provider")
    search_fields = ("name", "session__title", "model__model_id")
    raw_id_fields = ("session", "model", "fallback_model")
    inlines = (CriterionInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).annotate(_criterion_count=Count("criteria"))

    @admin.display(description="Criteria", ordering="_criterion_count")
    def criterion_count(self, obj: Agent) -> int:
        return _annotated(obj, "_criterion_count")


# --------------------------------------------------------------------------------------------------
# History (read-only)
# --------------------------------------------------------------------------------------------------


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Turn]):
    list_display = (
        "session",
        "round",
        "agent_name",
        "attempt",
        "kind",
        "status",
        "model_used",
        "overall_score",
        "parse_tier",
        "reasoning_tokens",
        "credits",
        "latency_ms",
        "started_at",
    )
    list_select_related = ("session",)
    list_filter = ("status", "parse_tier", "kind")
    search_fields = ("session__title", "agent_name", "model_used", "error")
    raw_id_fields = ("session", "agent")


@admin.register(DocumentVersion)
class DocumentVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[DocumentVersion]):
    list_display = ("session", "number", "change_percent", "turn", "note", "created_at")
    list_select_related = ("session", "turn")
    search_fields = ("session__title", "note")
    raw_id_fields = ("session", "turn")

    @admin.display(description="Changed", ordering="change_ratio")
    def change_percent(self, obj: DocumentVersion) -> str:
        return f"{obj.change_ratio:.0%}"


@admin.register(SessionEvent)
class SessionEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[SessionEvent]):
    list_display = ("session", "seq", "kind", "turn", "created_at")
    list_select_related = ("session", "turn")
    list_filter = ("kind",)
    search_fields = ("session__title",)
    raw_id_fields = ("session", "turn")


@admin.register(TeamPreset)
class TeamPresetAdmin(admin.ModelAdmin[TeamPreset]):
    list_display = ("name", "slug", "owner", "flow", "agent_count", "created_at")
    list_select_related = ("owner",)
    list_filter = ("flow", ("owner", admin.EmptyFieldListFilter))
    search_fields = ("name", "slug", "owner__email")
    raw_id_fields = ("owner",)
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(description="Agents")
    def agent_count(self, obj: TeamPreset) -> int:
        agents = obj.data.get("agents") if isinstance(obj.data, dict) else None
        return len(agents) if isinstance(agents, list) else 0


# --------------------------------------------------------------------------------------------------
# Conversations (issue 12): viewable by staff; users change them through their pages
# --------------------------------------------------------------------------------------------------


class MessageInline(ReadOnlyAdminMixin, admin.TabularInline[Message, Conversation]):
    model = Message
    fields = ("position", "exchange", "role", "status", "agent_name", "content", "superseded", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Conversation]):
    list_display = ("title", "project", "owner", "message_count", "run_status", "last_message_at")
    list_select_related = ("project__owner", "session")
    list_filter = ("session__status",)
    search_fields = ("title", "project__name", "project__owner__email")
    readonly_fields = ("project", "title", "session", "max_handoffs", "created_at", "last_message_at")
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).annotate(messages_total=Count("messages"))

    @admin.display(description="Owner")
    def owner(self, obj: Conversation) -> str:
        return obj.project.owner.email

    @admin.display(description="Messages", ordering="messages_total")
    def message_count(self, obj: Conversation) -> int:
        return _annotated(obj, "messages_total")

    @admin.display(description="Reply")
    def run_status(self, obj: Conversation) -> str:
        return obj.session.get_status_display()
