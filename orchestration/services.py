"""Session workflows: validate, start, pause, resume, stop, continue, human edits.

Views and commands call these; they write, then notify on commit (events, task enqueue).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from orchestration.events import Outbox, append_event
from orchestration.models import (
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    Agent,
    Project,
    ReferenceDocument,
    Status,
    StopReason,
    Turn,
    WritingSession,
)
from orchestration.retrieval import index_references
from orchestration.termination import Stop
from orchestration.versions import record_version

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

MAX_ROUNDS_LIMIT = 50
MAX_DOCUMENT_CHARS = 400_000  # working document, brief and each reference; beyond this no model fits it anyway
MAX_CONTINUE_ROUNDS = 20
MAX_REFERENCES = 20  # reference documents per session


class ServiceError(Exception):
    """A refusal with a message meant for the user."""

    def __init__(self, message: str, *, upgrade_url: str = "") -> None:  # upgrade_url set: a plan limit
        super().__init__(message)
        self.message = message
        self.upgrade_url = upgrade_url


def set_status(session: WritingSession, to: str, **fields: Any) -> bool:
    """Compare-and-swap the status. Refuses transitions outside ALLOWED_TRANSITIONS."""
    current = session.status
    if to != current and to not in ALLOWED_TRANSITIONS.get(current, set()):
        raise ServiceError(f"A {session.get_status_display().lower()} session cannot become {to}.")
    updated = WritingSession.objects.filter(pk=session.pk, status=current).update(
        status=to, updated_at=timezone.now(), **fields
    )
    if not updated:
        return False
    session.status = to
    for key, value in fields.items():
        setattr(session, key, value)
    return True


def status_payload(session: WritingSession) -> dict[str, Any]:
    return {
        "status": session.status,
        "round": session.current_round,
        "max_rounds": session.max_rounds,
        "stop_reason": session.stop_reason,
        "stop_detail": session.stop_detail,
    }


def emit_status(session: WritingSession, *, outbox: Outbox | None = None) -> None:
    """Write the session's status event (pushed after commit; into `outbox` when given, see events.Outbox)."""
    append_event(session_id=session.pk, kind="status", payload=status_payload(session), outbox=outbox)


def enqueue_run(session_id: int) -> None:
    """Hand the session to a worker once the current transaction commits."""
    from orchestration.tasks import enqueue_drive

    transaction.on_commit(lambda: enqueue_drive(session_id))


def validate_for_start(session: WritingSession, *, extra_rounds: int = 0) -> list[str]:
    """Every reason this session cannot run, in words the user can act on. Empty means ready."""
    from orchestration.prompts import estimate_tokens

    problems: list[str] = []
    if not session.brief.strip():
        problems.append("Write a brief: the team needs to know what to write.")
    rounds = session.max_rounds + extra_rounds
    if not 1 <= rounds <= MAX_ROUNDS_LIMIT:
        problems.append(f"Rounds must be between 1 and {MAX_ROUNDS_LIMIT} (got {rounds}).")
    for label, text in [("The brief", session.brief), ("The working document", session.document)]:
        if len(text) > MAX_DOCUMENT_CHARS:
            problems.append(f"{label} is too long ({len(text):,} characters; the limit is {MAX_DOCUMENT_CHARS:,}).")
    references = list(session.references.all())
    for ref in references:
        if len(ref.content) > MAX_DOCUMENT_CHARS:
            problems.append(f"Reference “{ref.title}” is too long ({len(ref.content):,} characters).")
    agents = list(
        session.agents.filter(active=True).select_related("model", "fallback_model").prefetch_related("criteria")
    )
    if not agents:
        problems.append("Add at least one active agent.")
    # What every prompt carries, in tokens: each agent's model must fit it beside its reply.
    fixed = estimate_tokens(session.brief + session.document + "".join(r.content for r in references))
    seen_providers: set[str] = set()
    for agent in agents:
        problems.extend(_agent_problems(agent, fixed_tokens=fixed, seen_providers=seen_providers))
    if agents:
        from orchestration.flows import get_policy

        problems.extend(get_policy(session.flow).validate(session, agents))
    if session.threshold_agent_id and session.threshold_agent_id not in {a.pk for a in agents}:
        problems.append("The score threshold watches an agent that is not active in this session.")
    return problems


def _agent_problems(agent: Agent, *, fixed_tokens: int, seen_providers: set[str]) -> list[str]:
    """Why `agent` cannot run: its models (usable, provider connected; each provider is checked once per
    `seen_providers`, which this adds to), criteria, role prompt, reasoning settings, and whether
    `fixed_tokens` (brief, document, references) fit its model's context window beside its reply."""
    from orchestration import reasoning
    from orchestration.catalogue import validate_model_for_use
    from orchestration.providers import provider_available

    problems: list[str] = []
    for model in filter(None, [agent.model, agent.fallback_model]):
        if error := validate_model_for_use(model):
            problems.append(f"{agent.name}: {error}")
        if model.provider not in seen_providers:
            seen_providers.add(model.provider)
            ok, reason = provider_available(model.provider)  # user words: no environment variable names
            if not ok:
                problems.append(f"{agent.name}: {reason}")
    if not any(c.weight > 0 for c in agent.criteria.all()):
        problems.append(f"{agent.name}: add at least one evaluation criterion with a weight.")
    if not agent.role_prompt.strip():
        problems.append(f"{agent.name}: write a role prompt.")
    for message in reasoning.validate(
        model=agent.model,
        max_output_tokens=agent.max_output_tokens,
        thinking_budget=agent.thinking_budget_tokens,
        reasoning_effort=agent.reasoning_effort,
        strict=False,
    ).values():
        problems.append(f"{agent.name}: {message}")
    # Thinking shares the context window with the reply: the plan's total is what must fit.
    output = reasoning.plan_for_agent(agent).max_tokens
    budget = agent.model.context_window - output
    if fixed_tokens > budget:
        thinking = " and its reasoning" if output > agent.max_output_tokens else ""
        problems.append(
            f"{agent.name}: the brief, document and references (~{fixed_tokens:,} tokens) do not fit "
            f"{agent.model.display_name}'s context window ({agent.model.context_window:,} tokens "
            f"minus {output:,} for the reply{thinking})."
        )
    return problems


def _check_gate(user: User, action: str, **context: Any) -> None:
    from billing.gating import check
    from billing.services import hold_user_lock

    # The gate counts the user's active runs, then we start one: hold the user's lock so concurrent
    # starts are checked one after another (8 simultaneous starts ran 4 Free sessions on PostgreSQL).
    hold_user_lock(user=user)
    gate = check(user, action, **context)
    if not gate.allowed:
        raise ServiceError(gate.reason, upgrade_url=gate.upgrade_url)


# --- creating things: caps and per-user quotas are checked in the transaction that writes ----------


def enforce_quota(*, user: User, action: str, adding: int = 1) -> None:
    """Hold the user's lock (until the caller's transaction ends) and check a storage quota:
    action is "create_project", "create_session" (adding = how many) or "store_references"
    (adding = characters). Raises ServiceError with the plan's reason. Call inside
    ``transaction.atomic()``, before the write it guards."""
    _check_gate(user, action, adding=adding)  # takes the user's lock before counting


@transaction.atomic
def create_project(*, owner: User, name: str, description: str = "") -> Project:
    """A new project for ``owner``; raises ServiceError beyond the plan's project quota."""
    enforce_quota(user=owner, action="create_project")
    return Project.objects.create(owner=owner, name=name, description=description)


def update_project(*, project: Project, name: str | None = None, description: str | None = None) -> Project:
    """Rename a project and/or change its description (values already validated by ProjectForm)."""
    fields = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
    for key, value in fields.items():
        setattr(project, key, value)
    if fields:
        project.save(update_fields=[*fields, "updated_at"])
    return project


def set_project_archived(*, project: Project, archived: bool) -> Project:
    """Archive (hide from the dashboard, sessions kept) or restore a project; idempotent."""
    if archived != (project.archived_at is not None):
        project.archived_at = timezone.now() if archived else None
        project.save(update_fields=["archived_at", "updated_at"])
    return project


@transaction.atomic
def delete_project(*, project: Project) -> str:
    """Delete a project with its sessions; returns its name. ServiceError while any session runs
    (the sessions are locked first, so a Start cannot slip in between the check and the delete)."""
    sessions = list(WritingSession.objects.select_for_update().filter(project=project).values_list("status", flat=True))
    if any(status in ACTIVE_STATUSES for status in sessions):
        raise ServiceError("Stop the project's running sessions before deleting it.")
    name = project.name
    project.delete()
    return name


@transaction.atomic
def add_references(*, session: WritingSession, user: User, items: list[tuple[str, str, str]]) -> int:
    """Store reference documents ``items`` = [(title, content, source_filename)] on a session.

    All or nothing. The cap of MAX_REFERENCES per session and the user's quota of stored reference
    text are checked under locks in this transaction (the session row, then the user's), so
    concurrent uploads cannot each pass a count taken before the others wrote (8 simultaneous
    uploads of 10 files stored 80). Raises ServiceError. Returns how many were added.
    """
    if not items:
        return 0
    locked = WritingSession.objects.select_for_update().select_related("project").get(pk=session.pk)
    if locked.project.owner_id != user.pk:
        raise ServiceError("You can only add references to your own sessions.")
    if locked.status in ACTIVE_STATUSES:
        raise ServiceError("This session is running. Pause or stop it before changing its references.")
    existing = ReferenceDocument.objects.filter(session=locked).count()
    if existing + len(items) > MAX_REFERENCES:
        raise ServiceError(
            f"A session holds at most {MAX_REFERENCES} reference documents (it has {existing}; you added {len(items)})."
        )
    enforce_quota(user=user, action="store_references", adding=sum(len(content) for _, content, _ in items))
    created = ReferenceDocument.objects.bulk_create(
        ReferenceDocument(session=locked, title=title, content=content, source_filename=filename)
        for title, content, filename in items
    )
    index_references(created)  # chunked into searchable passages in the same transaction
    return len(items)


# What the builder may change on a session; everything else (status, round, sequence counters,
# totals, lease, timestamps) belongs to the engine and is written only by these services.
SETTINGS_FIELDS = (
    "title",
    "flow",
    "flow_config",
    "brief",
    "document",
    "max_rounds",
    "score_threshold",
    "threshold_agent",
    "convergence_percent",
    "credit_budget",
)


def save_session_settings(*, session: WritingSession, changes: dict[str, Any]) -> bool:
    """Write the builder's settings (only SETTINGS_FIELDS) unless the session is running.

    One conditional UPDATE of just these columns: a form holding a stale copy of the row can never
    write back the status, the event counter or totals (a double-click on Start did, and the second
    start then failed with a duplicate event sequence). Returns False, writing nothing, when the
    session is queued or running (a late autosave after Start). Raises ValueError for other fields.
    """
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValueError(f"Not builder settings: {sorted(unknown)}")
    updated = (
        WritingSession.objects.filter(pk=session.pk)
        .exclude(status__in=ACTIVE_STATUSES)
        .update(**changes, updated_at=timezone.now())
    )
    return bool(updated)


@transaction.atomic
def start_session(*, session: WritingSession, user: User) -> WritingSession:
    """Queue a draft for the engine; idempotent: starting a session that is already queued or
    running returns it unchanged. Raises ServiceError (a message for the user) otherwise."""
    session = WritingSession.objects.select_for_update().select_related("project").get(pk=session.pk)
    if session.project.owner_id != user.pk:
        raise ServiceError("You can only start your own sessions.")
    if session.status in ACTIVE_STATUSES and session.started_at is not None:
        # A double-click or a retried request: the first start won; the second gets the same result.
        return session
    if session.status != Status.DRAFT:
        raise ServiceError("This session has already been started.")
    problems = validate_for_start(session)
    if problems:
        raise ServiceError(" ".join(problems))
    _check_gate(user, "start_session", session=session)
    if session.document.strip() and not session.versions.exists():
        record_version(session=session, content=session.document, note="Starting document")
    set_status(session, Status.QUEUED, stop_reason="", stop_detail="", started_at=timezone.now())
    emit_status(session)
    enqueue_run(session.pk)
    return session


@transaction.atomic
def pause_session(*, session: WritingSession, by_staff: User | None = None) -> WritingSession:
    """Ask the run to pause after the step in flight. Raises ServiceError unless it is queued or running.

    `by_staff` (a staff user acting on someone else's session from the staff live view) makes the stop
    reason "Paused by Atelier staff", which the owner sees, and records the action in the admin log.
    """
    session = WritingSession.objects.select_for_update().get(pk=session.pk)
    if session.status not in (Status.QUEUED, Status.RUNNING):
        raise ServiceError("Only a running session can be paused.")
    reason = StopReason.STAFF_PAUSED if by_staff is not None else StopReason.USER_PAUSED
    # The executor finishes the step in flight, then marks it paused.
    set_status(session, Status.PAUSING, stop_reason=reason, stop_detail="Pausing after this turn.")
    emit_status(session)
    if by_staff is not None:
        _log_staff_action(staff=by_staff, session=session, message="Paused the run from the staff live view.")
    enqueue_run(session.pk)  # an idle queued session has no executor to notice; this one will
    return session


@transaction.atomic
def resume_session(*, session: WritingSession, user: User | None = None) -> WritingSession:
    session = WritingSession.objects.select_for_update().select_related("project__owner").get(pk=session.pk)
    if session.status != Status.PAUSED:
        raise ServiceError("Only a paused session can be resumed.")
    if session.stop_reason == StopReason.AWAITING_APPROVAL:
        raise ServiceError("The plan is waiting for your approval: approve it to run the tasks, or stop the session.")
    problems = validate_for_start(session)
    if problems:
        raise ServiceError(" ".join(problems))
    _check_gate(user or session.project.owner, "continue_session", session=session)
    set_status(session, Status.QUEUED, stop_reason="", stop_detail="")
    emit_status(session)
    enqueue_run(session.pk)
    return session


@transaction.atomic
def approve_plan(*, session: WritingSession, user: User) -> WritingSession:
    """Approve the task graph of a planned run waiting for approval, and resume it (the tasks start).

    Raises ServiceError when the session is not waiting for an approval (nothing to approve, or already
    approved) or cannot be resumed. The approval is recorded on the plan's turn (approved_at, approved_by)
    and in the event log ("plan_approved"), so the flow never asks again for this plan.
    """
    from orchestration.flows.planned import current_plan, load_slots

    session = WritingSession.objects.select_for_update().select_related("project__owner").get(pk=session.pk)
    if session.status != Status.PAUSED or session.stop_reason != StopReason.AWAITING_APPROVAL:
        raise ServiceError("This session is not waiting for a plan approval.")
    plan = current_plan(load_slots(session))
    if plan is None or not plan.result.get("valid"):
        raise ServiceError("There is no valid plan to approve.")
    result = {**plan.result, "approved_at": timezone.now().isoformat(), "approved_by": user.pk}
    Turn.objects.filter(pk=plan.pk).update(result=result)
    WritingSession.objects.filter(pk=session.pk).update(stop_reason="")
    append_event(session_id=session.pk, kind="plan_approved", turn_id=plan.pk, payload={"tasks": len(result["tasks"])})
    return resume_session(session=session, user=user)


@transaction.atomic
def stop_session(*, session: WritingSession, by_staff: User | None = None) -> WritingSession:
    """Stop the run: at once if nothing is executing it, else within about a second (the executor cancels
    the calls in flight and keeps what was written). Raises ServiceError if it is not running or paused.

    `by_staff` (a staff user acting from the staff live view) makes the stop reason "Stopped by Atelier
    staff", which the owner sees, and records the action in the admin log.
    """
    session = WritingSession.objects.select_for_update().get(pk=session.pk)
    now = timezone.now()
    lease_live = session.lease_expires_at is not None and session.lease_expires_at > now
    stop = requested_stop(StopReason.STAFF_STOPPED if by_staff is not None else StopReason.USER_STOPPED)
    if session.status == Status.PAUSED or (session.status == Status.QUEUED and not lease_live):
        set_status(
            session,
            Status.STOPPED,
            stop_reason=stop.reason,
            stop_detail=stop.detail,
            finished_at=now,
            final_document=session.document,
        )
        emit_status(session)
    elif session.status in (Status.QUEUED, Status.RUNNING, Status.PAUSING):
        # The executor cancels calls in flight within about a second and keeps what was written.
        set_status(session, Status.STOPPING, stop_reason=stop.reason, stop_detail="Stopping…")
        emit_status(session)
        enqueue_run(session.pk)
    else:
        raise ServiceError("This session is not running.")
    if by_staff is not None:
        _log_staff_action(staff=by_staff, session=session, message="Stopped the run from the staff live view.")
    return session


def requested_stop(reason: str) -> Stop:
    """The Stop a person asked for, by the reason the service recorded when they pressed Stop or Pause.

    The engine reads the reason back from the session when it ends or pauses the run, so a staff stop
    reads "Stopped by Atelier staff." to the owner and never "Stopped by you.".
    """
    details: dict[str, str] = {
        StopReason.STAFF_STOPPED: "Stopped by Atelier staff.",
        StopReason.STAFF_PAUSED: "Paused by Atelier staff. You can resume it.",
        StopReason.USER_PAUSED: "Paused by you.",
    }
    if reason not in details:
        reason = StopReason.USER_STOPPED
    return Stop(reason, details.get(reason, "Stopped by you."))


def _log_staff_action(*, staff: User, session: WritingSession, message: str) -> None:
    """Record a staff action on a user's session in the admin log (the session's admin History)."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.create(
        user_id=staff.pk,
        content_type=ContentType.objects.get_for_model(WritingSession),
        object_id=str(session.pk),
        object_repr=str(session)[:200],
        action_flag=CHANGE,
        change_message=message,
    )
    logger.info("staff user %s: %s (session %s)", staff.pk, message, session.pk)


@transaction.atomic
def continue_session(*, session: WritingSession, extra_rounds: int, user: User | None = None) -> WritingSession:
    session = WritingSession.objects.select_for_update().select_related("project__owner").get(pk=session.pk)
    if session.status not in (Status.COMPLETED, Status.STOPPED, Status.FAILED):
        raise ServiceError("Only a finished session can be continued.")
    if not 1 <= extra_rounds <= MAX_CONTINUE_ROUNDS:
        raise ServiceError(f"Continue for between 1 and {MAX_CONTINUE_ROUNDS} more rounds.")
    done = session.current_round
    new_max = done + extra_rounds
    problems = validate_for_start(session, extra_rounds=new_max - session.max_rounds)
    if problems:
        raise ServiceError(" ".join(problems))
    session.max_rounds = new_max
    _check_gate(user or session.project.owner, "continue_session", session=session)
    set_status(
        session,
        Status.QUEUED,
        max_rounds=new_max,
        continued_at_round=done,
        stop_reason="",
        stop_detail="",
        finished_at=None,
    )
    emit_status(session)
    enqueue_run(session.pk)
    return session


@transaction.atomic
def apply_human_edit(*, session: WritingSession, user: User, document: str, note: str) -> WritingSession:
    """While paused, the owner edits the working document and/or leaves a note for the next turn."""
    session = WritingSession.objects.select_for_update().select_related("project").get(pk=session.pk)
    if session.project.owner_id != user.pk:
        raise ServiceError("You can only edit your own sessions.")
    if session.status not in (Status.PAUSED, Status.DRAFT):
        raise ServiceError("Pause the session before editing the document.")
    if len(document) > MAX_DOCUMENT_CHARS:
        raise ServiceError(f"The document is too long (limit {MAX_DOCUMENT_CHARS:,} characters).")
    edited = document != session.document
    note = note.strip()
    if not edited and not note:
        raise ServiceError("Nothing changed: edit the document or write a note.")
    attempt = Turn.objects.filter(session=session, round=session.current_round, agent=None).count() + 1
    turn = Turn.objects.create(
        session=session,
        round=session.current_round,
        agent=None,
        agent_name=_display_name(user),
        attempt=attempt,
        kind=Turn.Kind.HUMAN,
        status=Turn.TurnStatus.COMPLETED,
        output_text=note,
        finished_at=timezone.now(),
    )
    if edited:
        version = record_version(session=session, content=document, turn=turn, note="Edited by you")
        append_event(
            session_id=session.pk,
            kind="version",
            payload={"number": version.number, "change_ratio": version.change_ratio},
        )
    WritingSession.objects.filter(pk=session.pk).update(human_note=note)
    session.human_note = note
    append_event(session_id=session.pk, kind="human", payload={"edited": edited, "note": note}, turn_id=turn.pk)
    return session


def _display_name(user: User) -> str:
    from accounts.services import display_name

    return display_name(user)[:80]


def delete_session(*, session: WritingSession, user: User) -> str:
    """Delete a session with its agents, turns, versions, references and events; returns its title.

    Refused (ServiceError) for anyone but the owner and while the session runs (queued, running,
    pausing, stopping): stop or pause it first. The status is re-read under a row lock, so a Start
    racing the delete cannot leave a worker driving a deleted session. The credit ledger keeps its
    entries (append-only); the billing page lists their session as deleted.
    """
    from orchestration.models import ACTIVE_STATUSES

    if session.project.owner_id != user.pk:
        raise ServiceError("You can only delete your own sessions.")
    with transaction.atomic():
        locked = WritingSession.objects.select_for_update().get(pk=session.pk)
        if locked.status in ACTIVE_STATUSES:
            raise ServiceError("This session is running. Stop or pause it before deleting it.")
        title = locked.title
        locked.delete()
    return title
