from __future__ import annotations

from orchestration.flows.base import AgentCall, CallShape, Finished, Step
from orchestration.models import Agent, StopReason, Turn, WritingSession


class SequentialFlow:
    """Agents take turns A, B, A, B ...; a round is one pass over the active agents."""

    name = "sequential"
    description = "Agents take turns: each revises the whole document in order, once per round."
    diagram = "A → B → C → (next round)"
    roles = ()  # any role names; every agent revises
    phases = (("writing", "Writing"),)

    def next_step(self, session: WritingSession) -> Step | Finished:
        agent_ids = list(session.agents.filter(active=True).order_by("order", "pk").values_list("pk", flat=True))
        if not agent_ids:
            return Finished(StopReason.ERROR, "The session has no active agents.")
        last = (
            Turn.objects.filter(session=session, kind=Turn.Kind.AGENT, status__in=Turn.DONE_STATUSES)
            .exclude(agent_id__isnull=True)
            .order_by("-round", "-pk")
            .values("round", "agent_id")
            .first()
        )
        if last is None:
            round_number, index = 1, 0
        else:
            round_number = last["round"]
            try:
                index = agent_ids.index(last["agent_id"]) + 1
            except ValueError:  # the agent was deactivated since; start the next round
                index = len(agent_ids)
            if index >= len(agent_ids):
                round_number, index = round_number + 1, 0
        if round_number > session.max_rounds:
            return Finished(StopReason.MAX_ROUNDS, f"Completed {session.max_rounds} rounds.")
        agent_id = agent_ids[index]
        return Step(
            round=round_number,
            calls=[AgentCall(agent_id=agent_id, slot=f"turn:{agent_id}", phase="writing")],
            phase="writing",
        )

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        return []

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        return CallShape(calls_per_round=[1 for _ in roles])
