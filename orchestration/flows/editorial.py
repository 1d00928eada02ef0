"""Writer -> parallel editors -> synthesizer.

One round: the writer drafts (round 1) or revises (later rounds) the document; every editor reviews
that same draft in parallel and returns numbered edits and comments, not a new document; the
synthesizer merges the feedback into the next version and says which edits it took or rejected and
why. An editor that fails for good (after retries and the fallback model) is marked given up and the
round goes on with the others; the session fails only if no editor succeeded.
"""

from __future__ import annotations

from typing import Any

from orchestration.flows.base import (
    AgentCall,
    CallShape,
    Finished,
    Output,
    Recipe,
    Step,
    agents_by_role,
    last_round_started,
    round_state,
)
from orchestration.models import Agent, StopReason, WritingSession

WRITER, EDITOR, SYNTHESIZER = "writer", "editor", "synthesizer"


def review_step(
    state: dict[str, Any], reviewers: list[int], round_number: int, *, inputs: tuple[int, ...] = ()
) -> tuple[list[int], Step | None]:
    """The parallel review phase shared by the editorial and roundtable flows.

    Returns (ids of the completed review turns, the Step of reviews still to run or None when every
    reviewer has completed or been given up). One completed review is enough for the round to go on.
    """
    done = [
        state[f"review:{r}"].turn_id for r in reviewers if state.get(f"review:{r}") and state[f"review:{r}"].turn_id
    ]
    pending = [r for r in reviewers if not (s := state.get(f"review:{r}")) or not (s.turn_id or s.given_up)]
    if not pending:
        return done, None
    calls = [
        AgentCall(r, slot=f"review:{r}", recipe=Recipe.CRITIQUE, output=Output.NOTES, inputs=inputs, phase="reviewing")
        for r in pending
    ]
    return done, Step(round=round_number, calls=calls, quorum=max(0, 1 - len(done)), phase="reviewing")


class EditorialFlow:
    name = "editorial"
    description = (
        "A writer drafts; every editor reviews the same draft in parallel; a synthesizer merges their "
        "edits into the next version, saying what it took and why."
    )
    diagram = "Writer → [Editor ‖ Editor ‖ …] → Synthesizer → (next round)"
    roles = (WRITER, EDITOR, SYNTHESIZER)
    phases = (("writing", "Writing"), ("reviewing", "Reviewing"), ("synthesizing", "Synthesizing"))

    def next_step(self, session: WritingSession) -> Step | Finished:
        roles = agents_by_role(session)
        writers, editors, synthesizers = roles.get(WRITER, []), roles.get(EDITOR, []), roles.get(SYNTHESIZER, [])
        if not (writers and editors and synthesizers):
            return Finished(StopReason.ERROR, "The editorial flow needs a writer, an editor and a synthesizer.")
        writer, synthesizer = writers[0], synthesizers[0]
        round_number = max(1, last_round_started(session))
        while True:
            if round_number > session.max_rounds:
                return Finished(StopReason.MAX_ROUNDS, f"Completed {session.max_rounds} rounds.")
            state = round_state(session, round_number)
            write = state.get("write")
            if write is None or write.turn_id is None:
                call = AgentCall(writer, slot="write", recipe=Recipe.REVISE, output=Output.DOCUMENT, phase="writing")
                return Step(round=round_number, calls=[call], phase="writing")
            done, review = review_step(state, editors, round_number, inputs=(write.turn_id,))
            if review is not None:
                return review
            if not done:
                return Finished(StopReason.ERROR, f"No editor could review the draft in round {round_number}.")
            synth = state.get("synthesize")
            if synth is None or synth.turn_id is None:
                call = AgentCall(
                    synthesizer,
                    slot="synthesize",
                    recipe=Recipe.SYNTHESIZE,
                    output=Output.DOCUMENT,
                    inputs=tuple(done),
                    phase="synthesizing",
                )
                return Step(round=round_number, calls=[call], phase="synthesizing")
            round_number += 1

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        return validate_roles(
            agents,
            required={WRITER: (1, 1), EDITOR: (1, None), SYNTHESIZER: (1, 1)},
            flow_label="The editorial flow",
        )

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        return CallShape(
            calls_per_round=[1 if (r or "").strip().lower() in self.roles else 0 for r in roles],
            reviewer_roles=(EDITOR,),
            reader_roles=(SYNTHESIZER,),
        )


def validate_roles(agents: list[Agent], *, required: dict[str, tuple[int, int | None]], flow_label: str) -> list[str]:
    """Problems with the team's roles for a flow, in words that say what is missing."""
    problems: list[str] = []
    counts: dict[str, list[str]] = {}
    for agent in agents:
        counts.setdefault((agent.role or "").strip().lower(), []).append(agent.name)
    for role, (low, high) in required.items():
        have = len(counts.get(role, []))
        if have < low:
            article = "an" if role[:1] in "aeiou" else "a"
            need = f"{article} {role}" if low == 1 else f"{low} {role}s"
            problems.append(f"{flow_label} needs {need}: set an agent's role to “{role}”.")
        elif high is not None and have > high:
            holders = ", ".join(counts[role])
            problems.append(f"{flow_label} takes only one {role}; {holders} all have that role.")
    for role, names in counts.items():
        if role not in required:
            allowed = ", ".join(f"“{r}”" for r in required)
            problems.append(
                f"{', '.join(names)}: the role “{role or '(none)'}” has no part in this flow; use one of {allowed}."
            )
    return problems
