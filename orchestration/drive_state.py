"""What one drive keeps across its steps and calls: its call limits, its cache, and how a call ended.

Shared by the drive loop (orchestration/engine.py), the agent call (orchestration/calls.py) and the turn
bookkeeping (orchestration/turns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from django.conf import settings

from orchestration.models import Agent

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from orchestration.flows import AgentCall
    from orchestration.models import LLMModel
    from orchestration.providers import ModelRequest


class TurnRow(NamedTuple):
    """What a drive keeps of each agent turn of its session (DriveCache.turns)."""

    turn_id: int
    status: str
    attempt: int
    slot: str


# Per (round, agent id): that agent's turns in that round.
TurnRows = dict[tuple[int, int], list[TurnRow]]

# How one agent call ended (CallOutcome.status).
# "held": no turn was begun because a Stop or Pause was pressed (turns.begin_turn); the engine acts on it.
CallStatus = Literal["completed", "cancelled", "out_of_credits", "failed", "too_large", "held"]


class CallLimiter:
    """How many calls of one session stream at once: overall and per provider (asyncio semaphores).

    The limits are the smaller of the engine's settings (ENGINE_MAX_PARALLEL_CALLS,
    ENGINE_MAX_CALLS_PER_PROVIDER) and the owner's plan (billing/plans.py max_parallel_calls,
    max_calls_per_provider). A call holds its slots from creating its turn to saving it, so a queued call
    neither shows as streaming nor reserves credits. It also hands out attempt numbers to calls of one
    agent running concurrently in one round (the planned flow's parallel tasks), so their turn keys differ.
    """

    def __init__(self, parallel: int | None = None, per_provider: int | None = None) -> None:
        self.parallel = parallel or settings.ENGINE_MAX_PARALLEL_CALLS
        self.per_provider = per_provider or settings.ENGINE_MAX_CALLS_PER_PROVIDER
        self._global = asyncio.Semaphore(self.parallel)
        self._providers: dict[str, asyncio.Semaphore] = {}
        self._attempts: dict[tuple[int, int, int], int] = {}

    @classmethod
    def for_owner(cls, owner: User) -> CallLimiter:
        """The limiter for `owner`'s plan: no query when the owner was loaded with its credit account
        (select_related("…owner__credit_account")), else one."""
        from billing.models import CreditAccount
        from billing.services import effective_plan, get_account

        try:
            account = owner.credit_account
        except CreditAccount.DoesNotExist:
            account = get_account(owner)
        plan = effective_plan(account)
        return cls(
            min(plan.max_parallel_calls, settings.ENGINE_MAX_PARALLEL_CALLS),
            min(plan.max_calls_per_provider, settings.ENGINE_MAX_CALLS_PER_PROVIDER),
        )

    @contextlib.asynccontextmanager
    async def hold(self, provider: str) -> AsyncIterator[None]:
        """Wait for a slot overall and one of `provider`'s, hold both for the block."""
        semaphore = self._providers.setdefault(provider, asyncio.Semaphore(self.per_provider))
        async with self._global, semaphore:
            yield

    def next_attempt(self, session_id: int, round_number: int, agent_id: int, floor: int) -> int:
        """The next attempt number of this agent in this round: above `floor` (what the caller knows was used)
        and above every number this limiter already handed out."""
        key = (session_id, round_number, agent_id)
        number = max(self._attempts.get(key, 0), floor) + 1
        self._attempts[key] = number
        return number


@dataclass
class DriveCache:
    """What one drive reads once and then keeps up to date itself (issue 15: no re-reads per call).

    Valid only while this executor holds the lease: the team, the references, the brief and the document
    cannot change while a session is active (services refuse it), and every turn is created and finished
    by the lease holder, so the drive knows each change it makes. A new drive starts a new cache.
    """

    agents: dict[int, Agent] = field(default_factory=dict)
    team_loaded: bool = False  # the whole team is in `agents` (calls.load_team)
    references: list[tuple[str, str]] | None = None
    # (round, agent id) -> [(turn id, status, attempt, slot)] of every turn of the session
    turns: TurnRows | None = None
    # agent id -> (turn id, agent name, feedback) of its latest completed turn with feedback
    feedback: dict[int, tuple[int, str, str]] | None = None
    last_version: int | None = None  # number of the session's latest version (0: none)
    reserved: dict[int, int] = field(default_factory=dict)  # turn id -> credits its reservation holds
    recovered: bool = False  # interrupted turns of earlier executors dealt with
    # The round the planned one-call step moves the session to, written by its turn start (begin_turn)
    round_change: int | None = None
    # The turn whose completion last brought the drive's session object up to its row (turns.complete_turn)
    row_saved_by: int | None = None
    # The session's call limits (global, per provider) and the attempt numbers handed out (CallLimiter).
    limiter: CallLimiter = field(default_factory=lambda: CallLimiter())
    # A one-call step's first attempt, begun by the phase that planned the step, until its call takes it over
    begun: BegunAttempt | None = None
    # Set by the drive for a one-call step: its call leaves its turn's completion in `deferred` for the phase
    # after the step (engine._between_steps), which saves it in one transaction with the next turn's start.
    defer_completion: bool = False
    deferred: DeferredCompletion | None = None

    def take_begun(self, call: AgentCall, model: LLMModel) -> BegunAttempt | None:
        """The attempt begun for `call` on `model` by the phase that planned its step (calls.begin_lone_call),
        handed over once; None if there is none for them."""
        begun = self.begun
        if begun is None or begun.call is not call or begun.model.pk != model.pk:
            return None
        self.begun = None
        return begun

    def note_turn(self, round_number: int, agent_id: int, turn: TurnRow) -> None:
        """Record a turn this drive created or finished (replacing its earlier entry)."""
        if self.turns is None:
            return
        rows = [row for row in self.turns.get((round_number, agent_id), []) if row.turn_id != turn.turn_id]
        self.turns[(round_number, agent_id)] = [*rows, turn]


@dataclass
class BegunAttempt:
    """A call's first attempt begun ahead of the call (calls.begin_lone_call): the call, its model, its attempt
    number and what turns.begin_turn returned for it ((turn id, request, estimated prompt tokens) or a
    CallOutcome), or the exception it raised (`prepared` is None then)."""

    call: AgentCall
    model: LLMModel
    number: int
    prepared: tuple[int, ModelRequest, int] | CallOutcome | None
    error: Exception | None = None


@dataclass
class DeferredCompletion:
    """A finished turn's completion left for the phase after its step (engine._between_steps): the turn, the
    reply's text (what turns.fail_turn keeps if saving it fails), and `save(outbox=...)`, turns.complete_turn
    with every other argument bound (returns the turn's status, None if it was not claimed)."""

    turn_id: int
    text: str
    save: Callable[..., str | None]


@dataclass
class CallOutcome:
    """How one agent call ended: its status, its turn (None if it failed before one existed), the error."""

    status: CallStatus
    turn_id: int | None = None
    error: str = ""
