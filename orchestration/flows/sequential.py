from __future__ import annotations

from orchestration.flows.base import AgentCall, CallShape, Finished, Step, last_done_turn, team_order
from orchestration.models import Agent, StopReason, WritingSession


class SequentialFlow:
    """Agents take turns A, B, A, B ...; a round is one pass over the active agents."""

    name = "sequential"
    description = "Agents take turns: each revises the whole document in order, once per round."
    diagram = "A → B → C → (next round)"
    roles = ()  # any role names; every agent revises
    phases = (("writing", "Writing"),)

    def next_step(self, session: WritingSession) -> Step | Finished:
        team = team_order(session)
        agent_ids = [pk for pk, active in team if active]
        if not agent_ids:
            return Finished(StopReason.ERROR, "The session has no active agents.")
        last = last_done_turn(session)
        if last is None:
            round_number, agent_id = 1, agent_ids[0]
        else:
            round_number, last_agent_id = last
            # The next active agent after the last one in the team's order, counting agents deactivated
            # since (their place in the order still says who comes after them in this round).
            order = [pk for pk, _active in team]
            position = order.index(last_agent_id) if last_agent_id in order else len(order)
            after = [pk for pk, active in team[position + 1 :] if active]
            if after:
                agent_id = after[0]
            else:
                round_number, agent_id = round_number + 1, agent_ids[0]
        if round_number > session.max_rounds:
            return Finished(StopReason.MAX_ROUNDS, f"Completed {session.max_rounds} rounds.")
        return Step(
            round=round_number,
            calls=[AgentCall(agent_id=agent_id, slot=f"turn:{agent_id}", phase="writing")],
            phase="writing",
        )

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        return []

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        return CallShape(calls_per_round=[1 for _ in roles])
