from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from orchestration.models import WritingSession


@dataclass(frozen=True)
class AgentCall:
    agent_id: int
    # Whether this agent's reply replaces the working document (writers, editors) or is
    # commentary only (critics, moderators in later flows).
    writes_document: bool = True


@dataclass(frozen=True)
class Step:
    round: int
    calls: list[AgentCall] = field(default_factory=list)  # run concurrently


@dataclass(frozen=True)
class Finished:
    reason: str  # a StopReason value
    detail: str = ""


class FlowPolicy(Protocol):
    def next_step(self, session: WritingSession) -> Step | Finished: ...
