"""The shape every flow shares: calls, steps, decisions and the per-slot state a policy reads.

A policy looks at persisted turns only (`round_state`), so it can re-plan any step after a crash:
a slot whose turn completed is never planned again, and the engine skips a call whose turn it finds
completed (see calls.run_call), so a re-run never repeats or double-charges a finished call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from orchestration.models import Agent, Turn, WritingSession

if TYPE_CHECKING:
    from orchestration.drive_state import TurnRows


class Output(StrEnum):
    """What a call's reply is for."""

    DOCUMENT = "document"  # replaces the working document (writer, synthesizer, moderator)
    NOTES = "notes"  # critique: comments and structured issues, read by a later call
    PLAN = "plan"  # a task graph, parsed into Turn.result (the planned flow)


class Recipe(StrEnum):
    """Which prompt template a call uses (orchestration/flows/recipes.py)."""

    REVISE = "revise"  # write or revise the whole document (the sequential flow, the editorial writer)
    CRITIQUE = "critique"  # review the document: comments + structured issues + scores; no document
    SYNTHESIZE = "synthesize"  # merge editors' feedback into the next version; say what was taken and why
    MODERATE = "moderate"  # resolve critics' issues in a revision; say issue by issue what was done
    # The research -> plan -> build -> review pipeline (flows/pipeline.py):
    RESEARCH = "research"  # a summary of retrieved passages with numbered citations; no document
    OUTLINE = "outline"  # an outline and the sections with their goals; no document
    BUILD = "build"  # the full draft, obeying the brief's tone, length and format settings
    REVIEW = "review"  # scores, flags and find/replace edits; Atelier applies the edits (the merged version)
    # The planned flow (flows/planned.py):
    PLAN = "plan"  # turn the brief into a task graph (JSON), or repair an invalid one
    TASK = "task"  # carry out one task of the plan from its dependencies' results
    VERIFY = "verify"  # check one task's output against its expected output: a verdict and notes
    ASSEMBLE = "assemble"  # merge the tasks' outputs into the document, in plan order


@dataclass(frozen=True)
class AgentCall:
    agent_id: int
    # Unique within its round ("write", "review:7", "synthesize"); one agent holds one slot per round,
    # so the turn key (session, round, agent, attempt) also identifies the slot.
    slot: str = ""
    recipe: str = Recipe.REVISE
    output: str = Output.DOCUMENT
    inputs: tuple[int, ...] = ()  # ids of completed turns this call reads (the critiques to act on)
    phase: str = ""  # what the live page calls this part of the round: "writing", "reviewing"...
    passages: tuple[int, ...] = ()  # retrieved Passage ids this call reads, numbered [1], [2]... (research)
    # The planned flow (orchestration/flows/planned.py): per-call instructions, the model the router chose
    # (a catalogue row id; None = the agent's model, then its fallback) and what the engine journals when
    # the call starts and needs when it parses the reply ({"journal": [(kind, payload)], ...}).
    task: str = ""
    model_id: int | None = None
    context: dict[str, Any] = field(default_factory=dict[str, Any], compare=False)

    @property
    def writes_document(self) -> bool:
        return self.output == Output.DOCUMENT


@dataclass(frozen=True)
class Step:
    round: int
    calls: list[AgentCall] = field(default_factory=list)  # run concurrently
    # Completed calls needed for the round to go on; None means all of them. Below it, the engine
    # fails the session; at or above it, calls that failed for good are marked given up and skipped.
    quorum: int | None = None
    phase: str = ""

    @property
    def needed(self) -> int:
        return len(self.calls) if self.quorum is None else self.quorum


@dataclass(frozen=True)
class Finished:
    reason: str  # a StopReason value
    detail: str = ""


@dataclass(frozen=True)
class Waiting:
    """The next move is the user's (approve the plan): the engine pauses with this reason."""

    reason: str  # a StopReason value
    detail: str = ""


@dataclass(frozen=True)
class CallShape:
    """How a flow spends calls per round, for the credit estimate (billing.pricing)."""

    calls_per_round: list[int]  # per agent, index-aligned with the roles given
    reviewer_roles: tuple[str, ...] = ()  # their replies are notes, read by the reader roles
    reader_roles: tuple[str, ...] = ()  # their prompt carries every review of the round
    extra_first_round_calls: frozenset[int] = frozenset()  # agent ids with one more call in round 1
    max_rounds: int | None = None  # the flow never runs more rounds than this (a planned run: 1)


class FlowPolicy(Protocol):
    name: str

    # Read-only class attributes of each flow (properties here so a flow's literal tuples match).
    @property
    def description(self) -> str:
        """One sentence for the flow picker."""

    @property
    def diagram(self) -> str:
        """Who hands off to whom, in arrows."""

    @property
    def phases(self) -> tuple[tuple[str, str], ...]:
        """(key, label) of each phase of a round, in order."""

    def next_step(self, session: WritingSession) -> Step | Finished | Waiting:
        """The next calls to run, from the database alone; Finished when the flow is done."""

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        """Flow-specific start checks in words the user can act on (empty = ready)."""

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        """How many calls each agent makes per round and who reads whose reviews, for the credit estimate."""


@dataclass
class SlotState:
    """What the database says about one slot of a round."""

    turn_id: int | None = None  # the completed turn, if any
    given_up: bool = False  # failed for good; the flow went on without it
    agent_id: int | None = None
    agent_name: str = ""


def round_state(session: WritingSession, round_number: int) -> dict[str, SlotState]:
    """Slot -> state for one round: completed turns and given-up slots (one query)."""
    states: dict[str, SlotState] = {}
    rows = (
        Turn.objects.filter(session=session, round=round_number, kind=Turn.Kind.AGENT)
        .exclude(slot="")
        .order_by("pk")
        .values_list("pk", "slot", "status", "result", "agent_id", "agent_name")
    )
    for pk, slot, status, result, agent_id, agent_name in rows:
        state = states.setdefault(slot, SlotState(agent_id=agent_id, agent_name=agent_name))
        if status == Turn.TurnStatus.COMPLETED:
            state.turn_id = pk
            state.given_up = False
        elif isinstance(result, dict) and result.get("given_up") and state.turn_id is None:
            state.given_up = True
    return states


def last_round_started(session: WritingSession) -> int:
    """The highest round with any agent turn, 0 before the first."""
    last = (
        Turn.objects.filter(session=session, kind=Turn.Kind.AGENT)
        .order_by("-round")
        .values_list("round", flat=True)
        .first()
    )
    return last or 0


def agents_by_role(session: WritingSession) -> dict[str, list[int]]:
    """Active agents' ids by role (trimmed, lower case), in builder order: from the team the engine noted on the
    drive's session object (note_team), else one query."""
    noted = _noted_team(session)
    if noted is not None:
        active = [(pk, role) for pk, is_active, role in noted if is_active]
    else:
        active = list(session.agents.filter(active=True).order_by("order", "pk").values_list("pk", "role"))
    roles: dict[str, list[int]] = {}
    for pk, role in active:
        roles.setdefault((role or "").strip().lower(), []).append(pk)
    return roles


def team_order(session: WritingSession) -> list[tuple[int, bool]]:
    """(agent id, active) of the session's whole team in builder order: from the team the engine noted on the
    drive's session object (note_team), else one query."""
    noted = _noted_team(session)
    if noted is not None:
        return [(pk, active) for pk, active, _ in noted]
    return list(session.agents.order_by("order", "pk").values_list("pk", "active"))


def note_team(session: WritingSession, agents: list[Agent]) -> None:
    """Note on `session` (the drive's object) its whole team, `agents` in builder order, as the engine read it
    once for the drive (calls.load_team): team_order and agents_by_role answer from it for the rest of the
    drive. While a session is active its team cannot change (the services refuse edits, orchestration/team.py),
    and the engine keeps one session object for a whole drive (a new drive, after a pause and any edit, loads
    a new one)."""
    session.__dict__["_team"] = [(agent.pk, agent.active, agent.role) for agent in agents]


def _noted_team(session: WritingSession) -> list[tuple[int, bool, str]] | None:
    """(agent id, active, role) of the team noted on `session` by note_team, or None."""
    return session.__dict__.get("_team")


def last_done_turn(session: WritingSession) -> tuple[int, int] | None:
    """(round, agent id) of the session's latest agent turn that is done (Turn.DONE_STATUSES), or None.

    Read from the database unless the engine noted it on this session object as it saved a turn (note_done_turn):
    a drive holds the session's lease, so no one else saves its turns meanwhile, and the engine keeps one session
    object per drive (note_team). One statement fewer per sequential turn after a drive's first (issue 15)."""
    if "_last_done_turn" in session.__dict__:
        noted: tuple[int, int] = session.__dict__["_last_done_turn"]
        return noted
    return (
        Turn.objects.filter(session=session, kind=Turn.Kind.AGENT, status__in=Turn.DONE_STATUSES)
        .exclude(agent_id__isnull=True)
        .order_by("-round", "-pk")
        .values_list("round", "agent_id")
        .first()
    )


def last_done_in(turns: TurnRows) -> tuple[int, int] | None:
    """last_done_turn's answer from the session's agent turns already read (calls.load_turn_keys): the
    (round, agent id) of the latest done one, by round then id, or None."""
    done = [
        (round_number, row.turn_id, agent_id)
        for (round_number, agent_id), rows in turns.items()
        for row in rows
        if row.status in Turn.DONE_STATUSES
    ]
    latest = max(done, default=None)
    return None if latest is None else (latest[0], latest[2])


def note_done_turn(session: WritingSession, done: tuple[int, int] | None) -> None:
    """Note on `session` (the drive's object) that its latest done turn is now `done`, (round, agent id), or that
    it has none (the engine, from the turns a drive reads first; turns.complete_turn, as it saves one):
    last_done_turn answers from it for the rest of the drive."""
    session.__dict__["_last_done_turn"] = done
