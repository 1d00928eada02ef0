"""Flows are policies over persisted state: next_step(session) -> Step | Finished.

A policy reads only the database, so any step can be re-planned after a crash and every flow
is unit-testable without I/O. The engine executes whatever Step the policy returns.
"""

from __future__ import annotations

from orchestration.flows.base import AgentCall, Finished, FlowPolicy, Step
from orchestration.flows.sequential import SequentialFlow
from orchestration.models import Flow

POLICIES: dict[str, FlowPolicy] = {
    Flow.SEQUENTIAL: SequentialFlow(),
}


def get_policy(flow: str) -> FlowPolicy:
    try:
        return POLICIES[flow]
    except KeyError:
        raise ValueError(f"Unknown flow {flow!r}") from None


__all__ = ["AgentCall", "Finished", "FlowPolicy", "Step", "get_policy"]
