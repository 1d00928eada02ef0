"""Response and request shapes shared by the routes (the OpenAPI document is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ninja import Schema

if TYPE_CHECKING:
    from orchestration.models import Agent, Criterion, Project, ReferenceDocument, Turn, WritingSession


class FieldError(Schema):
    field: str
    message: str


class Error(Schema):
    """Every error response (api.errors)."""

    status: int
    code: str
    message: str
    errors: list[FieldError]
    upgrade_url: str | None = None
    retry_after: int | None = None


class Page(Schema):
    count: int
    next_offset: int | None


class ProjectOut(Schema):
    id: int
    name: str
    description: str
    archived: bool
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_archived(obj: Project) -> bool:
        return obj.archived_at is not None


class ProjectPage(Page):
    items: list[ProjectOut]


class ProjectIn(Schema):
    name: str
    description: str = ""


class ProjectPatch(Schema):
    name: str | None = None
    description: str | None = None
    archived: bool | None = None


ERRORS = {400: Error, 401: Error, 402: Error, 403: Error, 404: Error, 409: Error, 422: Error, 429: Error}


# --- sessions ---------------------------------------------------------------------------------------


class CriterionIn(Schema):
    name: str
    weight: float = 1.0
    description: str = ""


class AgentIn(Schema):
    """One agent of a team. ``model``: a catalogue reference "provider:model_id" (GET /models)."""

    name: str
    role: str = "writer"
    model: str
    fallback_model: str | None = None
    role_prompt: str
    temperature: float = 0.7
    max_output_tokens: int = 2048
    thinking_budget_tokens: int = 0
    reasoning_effort: str = ""
    active: bool = True
    criteria: list[CriterionIn] = []


class ReferenceIn(Schema):
    title: str = ""
    content: str


class SessionSettingsIn(Schema):
    """Settings shared by create and update; every field optional on update."""

    title: str | None = None
    brief: str | None = None
    document: str | None = None
    flow: str | None = None
    flow_config: dict[str, Any] | None = None
    max_rounds: int | None = None
    score_threshold: float | None = None
    threshold_agent_index: int | None = None
    convergence_percent: float | None = None
    credit_budget: int | None = None


class SessionCreate(SessionSettingsIn):
    """A new draft. The team: ``agents`` (the whole team in this request), or ``preset`` (a preset's
    slug or id, GET /presets), or neither (add a team later with PATCH). ``title`` is required."""

    project_id: int
    preset: str | None = None
    agents: list[AgentIn] | None = None
    references: list[ReferenceIn] = []


class SessionUpdate(SessionSettingsIn):
    """Change a session that is not running. ``agents`` replaces the whole team; ``preset`` applies one."""

    preset: str | None = None
    agents: list[AgentIn] | None = None


class CriterionOut(Schema):
    id: int
    name: str
    weight: float
    description: str


class AgentOut(Schema):
    id: int
    order: int
    name: str
    role: str
    model: str
    fallback_model: str | None
    role_prompt: str
    temperature: float
    max_output_tokens: int
    thinking_budget_tokens: int
    reasoning_effort: str
    active: bool
    criteria: list[CriterionOut]

    @staticmethod
    def resolve_model(obj: Agent) -> str:
        return f"{obj.model.provider}:{obj.model.model_id}"

    @staticmethod
    def resolve_fallback_model(obj: Agent) -> str | None:
        fallback = obj.fallback_model
        return f"{fallback.provider}:{fallback.model_id}" if fallback is not None else None

    @staticmethod
    def resolve_criteria(obj: Agent) -> list[Criterion]:
        return list(obj.criteria.all())


class Usage(Schema):
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int


class SessionSummary(Schema):
    id: int
    project_id: int
    title: str
    flow: str
    status: str
    round: int
    max_rounds: int
    stop_reason: str
    stop_detail: str
    credits_used: int
    last_seq: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_round(obj: WritingSession) -> int:
        return obj.current_round


class ReferenceOut(Schema):
    id: int
    title: str
    characters: int
    source_filename: str

    @staticmethod
    def resolve_characters(obj: ReferenceDocument) -> int:
        return len(obj.content)


class SessionOut(SessionSummary):
    brief: str
    document: str
    flow_config: dict[str, Any]
    score_threshold: float | None
    threshold_agent_id: int | None
    convergence_percent: float | None
    credit_budget: int | None
    provider_cost_usd: str
    usage: Usage
    agents: list[AgentOut]
    references: list[ReferenceOut]

    @staticmethod
    def resolve_document(obj: WritingSession) -> str:
        from orchestration.documents import current_document

        return current_document(obj)

    @staticmethod
    def resolve_provider_cost_usd(obj: WritingSession) -> str:
        return str(obj.provider_cost)

    @staticmethod
    def resolve_usage(obj: WritingSession) -> dict[str, int]:
        return {
            "input_tokens": obj.input_tokens,
            "cached_tokens": obj.cached_tokens,
            "output_tokens": obj.output_tokens,
            "reasoning_tokens": obj.reasoning_tokens,
        }

    @staticmethod
    def resolve_agents(obj: WritingSession) -> list[Agent]:
        return list(obj.agents.select_related("model", "fallback_model").prefetch_related("criteria"))

    @staticmethod
    def resolve_references(obj: WritingSession) -> list[ReferenceDocument]:
        return list(obj.references.all())


class SessionPage(Page):
    items: list[SessionSummary]


class ContinueIn(Schema):
    rounds: int


class TurnUsage(Schema):
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    estimated: bool


class TurnOut(Schema):
    id: int
    round: int
    attempt: int
    slot: str
    kind: str
    agent_id: int | None
    agent_name: str
    status: str
    recipe: str
    output_kind: str
    model_used: str
    output_text: str
    reasoning: str
    scores: dict[str, Any]
    overall_score: float | None
    parse_tier: str
    feedback: str
    result: dict[str, Any]
    usage: TurnUsage
    credits: int
    provider_cost_usd: str
    stop_reason: str
    latency_ms: int | None
    ttft_ms: int | None
    error: str
    started_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_usage(obj: Turn) -> dict[str, int | bool]:
        return {
            "input_tokens": obj.input_tokens,
            "cached_tokens": obj.cached_tokens,
            "cache_write_tokens": obj.cache_write_tokens,
            "output_tokens": obj.output_tokens,
            "reasoning_tokens": obj.reasoning_tokens,
            "estimated": obj.usage_estimated,
        }

    @staticmethod
    def resolve_provider_cost_usd(obj: Turn) -> str:
        return str(obj.provider_cost)


class TurnPage(Page):
    items: list[TurnOut]


class DocumentOut(Schema):
    session_id: int
    content: str
    characters: int
    version: int | None
    status: str


class VersionSummary(Schema):
    number: int
    note: str
    change_ratio: float
    turn_id: int | None
    created_at: datetime


class VersionOut(VersionSummary):
    content: str


class DiffOut(Schema):
    from_version: int
    to_version: int
    stats: dict[str, Any]
    unified: str
    html: str
