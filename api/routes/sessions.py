"""Sessions: create (a whole team in one request, or from a preset), read, list with filters, update
while not running, delete; start / pause / resume / stop / continue; turns with scores, usage and
credits; the convergence report. Validation is the builder's own forms; writes are the team service
and orchestration.services, exactly as the pages call them."""

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.forms.models import model_to_dict
from ninja import Router, Status

from api.errors import ApiError
from api.idempotency import idempotent
from api.routes.common import form_error, get_owned, paginate, service_error
from api.routes.projects import owned_project
from api.schemas import (
    ERRORS,
    AgentIn,
    ContinueIn,
    SessionCreate,
    SessionOut,
    SessionPage,
    SessionSettingsIn,
    SessionUpdate,
    TurnPage,
)
from atelier.core.http import AuthenticatedHttpRequest
from orchestration import presets, services, team
from orchestration.forms import AgentForm, CriterionForm, SessionSettingsForm
from orchestration.models import Agent, Flow, LLMModel, TeamPreset, Turn, WritingSession
from orchestration.models import Status as SessionStatus

router = Router(tags=["sessions"])


def owned_session(request: AuthenticatedHttpRequest, pk: int) -> WritingSession:
    """The caller's session ``pk`` (project loaded), or a 404. A conversation's hidden run is not a session."""
    sessions = WritingSession.objects.exclude(flow=Flow.CONVERSATION).select_related("project")
    return get_owned(sessions, pk=pk, what="session", project__owner_id=request.user.pk)


# --- validation through the builder's forms -------------------------------------------------------


def _model_pk(ref: str | None, field: str) -> str:
    """A catalogue reference ("provider:model_id", or a numeric id) as the form's choice value."""
    if not ref:
        return ""
    if ref.isdigit():
        return ref
    provider, _, model_id = ref.partition(":")
    pk = LLMModel.objects.filter(provider=provider, model_id=model_id).values_list("pk", flat=True).first()
    if pk is None:
        message = f"No model “{ref}”. See GET /models."
        raise ApiError(422, "Unknown model.", errors=[{"field": field, "message": message}])
    return str(pk)


def _clean_agent(
    request: AuthenticatedHttpRequest, session: WritingSession, spec: AgentIn, index: int
) -> tuple[dict[str, Any], list[team.CriterionSpec]]:
    """(agent fields, criteria) validated by AgentForm and CriterionForm, or a 422 naming agents.N.field."""
    prefix = f"agents.{index}."
    data = spec.dict(exclude={"criteria", "active"})
    data["model"] = _model_pk(spec.model, prefix + "model")
    data["fallback_model"] = _model_pk(spec.fallback_model, prefix + "fallback_model")
    form = AgentForm(data=data, instance=Agent(session=session), user=request.user)
    if not form.is_valid():
        raise form_error(form, prefix=prefix)
    criteria = []
    for c_index, criterion in enumerate(spec.criteria):
        c_form = CriterionForm(data=criterion.dict())
        if not c_form.is_valid():
            raise form_error(c_form, prefix=f"{prefix}criteria.{c_index}.")
        criteria.append(team.CriterionSpec(**c_form.cleaned_data))
    fields = {name: form.cleaned_data[name] for name in (form._meta.fields or ()) if name in form.cleaned_data}
    return {**fields, "active": spec.active}, criteria


def _flow_config_fields(flow: str, current: dict[str, Any], requested: dict[str, Any] | None) -> dict[str, Any]:
    """The settings form's per-flow fields (roundtable ``stop_*``, pipeline ``pipeline_*``) for
    ``flow``: its defaults, then the session's config when it already has this flow, then the request's."""
    from orchestration.flows import pipeline, roundtable

    per_flow: dict[str, tuple[dict[str, Any], str]] = {
        Flow.ROUNDTABLE: (roundtable.DEFAULT_CONFIG, ""),
        Flow.PIPELINE: (pipeline.DEFAULT_CONFIG, "pipeline_"),
    }
    defaults, prefix = per_flow.get(flow, ({}, ""))
    unknown = sorted(set(requested or {}) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "none for this flow"
        message = f"Unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}. Allowed: {allowed}."
        raise ApiError(422, "The request has invalid fields.", errors=[{"field": "flow_config", "message": message}])
    config = {**defaults, **current, **(requested or {})}
    return {f"{prefix}{key}": ("" if config.get(key) is None else config.get(key)) for key in defaults}


def _settings_data(session: WritingSession, payload: SessionSettingsIn) -> dict[str, Any]:
    """The settings form's data: the session's current values overlaid with what the request sets."""
    data: dict[str, Any] = model_to_dict(session, fields=SessionSettingsForm.Meta.fields)
    changes = payload.dict(exclude_unset=True, include=set(SessionSettingsIn.model_fields))
    index = changes.pop("threshold_agent_index", "unset")
    requested_config = changes.pop("flow_config", None)
    data.update(changes)
    data = {k: ("" if v is None else v) for k, v in data.items()}
    if index != "unset":
        agents = list(session.agents.order_by("order", "pk").values_list("pk", flat=True))
        if index is not None and not 0 <= index < len(agents):
            raise ApiError(
                422,
                "The request has invalid fields.",
                errors=[{"field": "threshold_agent_index", "message": f"No agent at index {index} in this team."}],
            )
        data["threshold_agent"] = "" if index is None else agents[index]
    flow = data.get("flow") or session.flow
    current = (session.flow_config or {}) if flow == session.flow else {}
    data.update(_flow_config_fields(flow, current, requested_config))
    if "stop_when_no_high_issues" in data:
        data["stop_when_no_high_issues"] = bool(data["stop_when_no_high_issues"])
    return data


def _save_settings(request: AuthenticatedHttpRequest, session: WritingSession, payload: SessionSettingsIn) -> None:
    """Validate with the builder's SessionSettingsForm (plan gate on the flow included) and save."""
    form = SessionSettingsForm(data=_settings_data(session, payload), instance=session, user=request.user)
    if not form.is_valid():
        raise form_error(form)
    form.save()
    if not form.saved:
        raise ApiError(409, team.RUNNING_MESSAGE, code="conflict")


def _preset(request: AuthenticatedHttpRequest, ref: str) -> TeamPreset:
    found = presets.presets_for(request.user).filter(Q(slug=ref) | Q(pk=int(ref) if ref.isdigit() else None)).first()
    if found is None:
        raise ApiError(422, "Unknown preset.", errors=[{"field": "preset", "message": "See GET /presets."}])
    return found


def _replace_team(request: AuthenticatedHttpRequest, session: WritingSession, agents: list[AgentIn]) -> None:
    cleaned = [_clean_agent(request, session, spec, i) for i, spec in enumerate(agents)]
    team.clear_team(session=session, user=request.user)
    for fields, criteria in cleaned:
        team.add_agent(session=session, user=request.user, fields=fields, criteria=criteria)


# --- sessions -----------------------------------------------------------------------------------------


@router.post("", response={201: SessionOut, **ERRORS}, summary="Create a session (Idempotency-Key supported)")
@idempotent(SessionOut)
def create_session(request: AuthenticatedHttpRequest, payload: SessionCreate) -> Status[WritingSession]:
    project = owned_project(request, payload.project_id)
    if payload.agents is not None and payload.preset:
        raise ApiError(422, "Send either agents or a preset, not both.", errors=[{"field": "preset", "message": ""}])
    title = (payload.title or "").strip()
    if not title:
        raise ApiError(422, "The request has invalid fields.", errors=[{"field": "title", "message": "Required."}])
    preset = _preset(request, payload.preset) if payload.preset else None
    try:
        with transaction.atomic():
            session = team.create_session(user=request.user, project=project, title=title[:200], preset=preset)
            if payload.agents:
                _replace_team(request, session, payload.agents)
            _save_settings(request, session, payload)
            items = [(r.title.strip() or r.content.strip()[:80], r.content, "") for r in payload.references]
            services.add_references(session=session, user=request.user, items=items)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return Status(201, owned_session(request, session.pk))


@router.get("", response={200: SessionPage, **ERRORS}, summary="List your sessions, newest first, with filters")
def list_sessions(
    request: AuthenticatedHttpRequest,
    project_id: int | None = None,
    status: SessionStatus | None = None,
    flow: Flow | None = None,
    q: str = "",
    limit: int = 20,
    offset: int = 0,
) -> dict[str, Any]:
    sessions = WritingSession.objects.filter(project__owner=request.user).exclude(flow=Flow.CONVERSATION)
    sessions = sessions.order_by("-created_at", "-pk")
    if project_id is not None:
        sessions = sessions.filter(project_id=project_id)
    if status:
        sessions = sessions.filter(status=status)
    if flow:
        sessions = sessions.filter(flow=flow)
    if q.strip():
        sessions = sessions.filter(title__icontains=q.strip())
    return paginate(sessions, limit=limit, offset=offset)


@router.get("/{int:session_id}", response={200: SessionOut, **ERRORS}, summary="Read a session with its team")
def get_session(request: AuthenticatedHttpRequest, session_id: int) -> WritingSession:
    return owned_session(request, session_id)


@router.patch("/{int:session_id}", response={200: SessionOut, **ERRORS}, summary="Update a session that is not running")
def update_session(request: AuthenticatedHttpRequest, session_id: int, payload: SessionUpdate) -> WritingSession:
    session = owned_session(request, session_id)
    if payload.agents is not None and payload.preset:
        raise ApiError(422, "Send either agents or a preset, not both.", errors=[{"field": "preset", "message": ""}])
    if session.is_active:
        raise ApiError(409, team.RUNNING_MESSAGE, code="conflict")
    try:
        with transaction.atomic():
            if payload.preset:
                team.apply_preset(session=session, user=request.user, preset=_preset(request, payload.preset))
                session.refresh_from_db()
            elif payload.agents is not None:
                _replace_team(request, session, payload.agents)
            _save_settings(request, session, payload)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return owned_session(request, session_id)


@router.delete("/{int:session_id}", response={204: None, **ERRORS}, summary="Delete a session that is not running")
def delete_session(request: AuthenticatedHttpRequest, session_id: int) -> Status[None]:
    session = owned_session(request, session_id)
    try:
        services.delete_session(session=session, user=request.user)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return Status(204, None)


# --- runs ---------------------------------------------------------------------------------------------


@router.post("/{int:session_id}/start", response={200: SessionOut, **ERRORS}, summary="Start a draft")
@idempotent(SessionOut)
def start_session(request: AuthenticatedHttpRequest, session_id: int) -> WritingSession:
    """Queue the draft. 422 ``not_ready`` lists every reason it cannot start (as the builder does);
    402 for a plan limit; starting a session that already runs returns it unchanged."""
    session = owned_session(request, session_id)
    if session.status == SessionStatus.DRAFT:
        problems = services.validate_for_start(session)
        if problems:
            raise ApiError(
                422,
                "This session cannot start yet.",
                code="not_ready",
                errors=[{"field": "session", "message": p} for p in problems],
            )
    try:
        services.start_session(session=session, user=request.user)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return owned_session(request, session_id)


def _act(
    request: AuthenticatedHttpRequest, session_id: int, action: Callable[[WritingSession], object]
) -> WritingSession:
    session = owned_session(request, session_id)
    try:
        action(session)
    except services.ServiceError as exc:
        raise service_error(exc) from None
    return owned_session(request, session_id)


@router.post("/{int:session_id}/pause", response={200: SessionOut, **ERRORS}, summary="Pause after the turn in flight")
def pause_session(request: AuthenticatedHttpRequest, session_id: int) -> WritingSession:
    return _act(request, session_id, lambda s: services.pause_session(session=s))


@router.post("/{int:session_id}/resume", response={200: SessionOut, **ERRORS}, summary="Resume a paused session")
def resume_session(request: AuthenticatedHttpRequest, session_id: int) -> WritingSession:
    from orchestration.live import resume_blocked

    def act(session: WritingSession) -> None:
        blocked = resume_blocked(session)
        if blocked:  # it would pause again at once (out of credits): the same answer as the page
            raise services.ServiceError(f"{blocked} Get more credits on the billing page, then resume.")
        services.resume_session(session=session, user=request.user)

    return _act(request, session_id, act)


@router.post("/{int:session_id}/stop", response={200: SessionOut, **ERRORS}, summary="Stop; keeps what was written")
def stop_session(request: AuthenticatedHttpRequest, session_id: int) -> WritingSession:
    return _act(request, session_id, lambda s: services.stop_session(session=s))


@router.post(
    "/{int:session_id}/continue",
    response={200: SessionOut, **ERRORS},
    summary="Run a finished session for more rounds (Idempotency-Key supported)",
)
@idempotent(SessionOut)
def continue_session(request: AuthenticatedHttpRequest, session_id: int, payload: ContinueIn) -> WritingSession:
    if not 1 <= payload.rounds <= services.MAX_CONTINUE_ROUNDS:
        raise ApiError(
            422,
            "The request has invalid fields.",
            errors=[{"field": "rounds", "message": f"Between 1 and {services.MAX_CONTINUE_ROUNDS}."}],
        )
    return _act(
        request,
        session_id,
        lambda s: services.continue_session(session=s, extra_rounds=payload.rounds, user=request.user),
    )


# --- turns and reports ----------------------------------------------------------------------------------


@router.get("/{int:session_id}/turns", response={200: TurnPage, **ERRORS}, summary="Turns with scores, usage, credits")
def list_turns(
    request: AuthenticatedHttpRequest, session_id: int, round: int | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    session = owned_session(request, session_id)
    turns = Turn.objects.filter(session=session).order_by("round", "pk")
    if round is not None:
        turns = turns.filter(round=round)
    return paginate(turns, limit=limit, offset=offset)


@router.get("/{int:session_id}/report", response={200: dict, **ERRORS}, summary="The flow's report")
def session_report(request: AuthenticatedHttpRequest, session_id: int) -> dict[str, Any]:
    """The roundtable's convergence report (issues by round and severity, verdict) or the pipeline's
    run report (research sources, plan, builds, reviews) or the planned flow's run summary (per task: status,
    model, tries, seconds, tokens, credits, cost; totals; critical path): the page's report as JSON. 404 for flows
    that have none (sequential, editorial: their run summary is the session itself and its turns)."""
    session = owned_session(request, session_id)
    if session.flow == Flow.PIPELINE:
        from orchestration.pipeline_report import pipeline_report

        report = pipeline_report(session).as_dict()
    elif session.flow == Flow.ROUNDTABLE:
        from orchestration.flows.roundtable import convergence_report

        report = convergence_report(session).as_dict()
    elif session.flow == Flow.PLANNED:
        from orchestration.flows.planned import run_summary

        report = run_summary(session)
    else:
        raise ApiError(404, f"The {session.get_flow_display()} flow has no report.")
    return {"session_id": session.pk, "title": session.title, "flow": session.flow, **report}
