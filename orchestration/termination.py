"""Termination conditions: small objects combined from the session's settings.

Each condition looks at persisted state only. `after_turn` checks run after every completed
turn; `end_of_round` checks run once a round is complete. Max rounds lives in the flow policy
(it decides whether another step exists) and is reported through Finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestration.models import DocumentVersion, StopReason, Turn, WritingSession
from orchestration.versions import change_ratio


@dataclass(frozen=True)
class Stop:
    reason: str
    detail: str


class ScoreThreshold:
    def __init__(self, threshold: float, agent_id: int | None) -> None:
        self.threshold = threshold
        self.agent_id = agent_id

    def after_turn(self, session: WritingSession, turn: Turn) -> Stop | None:
        if turn.overall_score is None or turn.round <= session.continued_at_round:
            return None
        if self.agent_id is not None and turn.agent_id != self.agent_id:
            return None
        if turn.overall_score >= self.threshold:
            return Stop(
                StopReason.SCORE_THRESHOLD,
                f"{turn.agent_name} scored {turn.overall_score:.1f} "
                f"(threshold {self.threshold:g}) in round {turn.round}.",
            )
        return None


class Convergence:
    def __init__(self, percent: float) -> None:
        self.percent = percent

    def end_of_round(self, session: WritingSession, round_number: int) -> Stop | None:
        """Stop when the round changed the document less than `percent` percent.

        A round whose completed turns all returned the document unchanged records no version:
        that is a 0 % change, not "nothing to compare" (issue 8, case 16).
        """
        if round_number < 2 or round_number - 1 <= session.continued_at_round:
            return None
        previous = _document_after_round(session, round_number - 1)
        if previous is None:
            return None
        current = _last_version_of_round(session, round_number)
        if current is None:
            unchanged = Turn.objects.filter(
                session=session, round=round_number, kind=Turn.Kind.AGENT, status=Turn.TurnStatus.COMPLETED
            ).exists()
            if not unchanged:
                return None
            return Stop(
                StopReason.CONVERGED,
                f"Round {round_number} left the document unchanged (0% change, below {self.percent:g}%).",
            )
        changed = change_ratio(previous, current) * 100
        if changed < self.percent:
            return Stop(
                StopReason.CONVERGED,
                f"Round {round_number} changed {changed:.1f}% of the document (below {self.percent:g}%).",
            )
        return None


class CreditBudget:
    def __init__(self, budget: int) -> None:
        self.budget = budget

    def before_step(self, session: WritingSession) -> Stop | None:
        if session.credits_used >= self.budget:
            return Stop(StopReason.BUDGET, f"Spent {session.credits_used} of the {self.budget}-credit budget.")
        return None


def _last_version_of_round(session: WritingSession, round_number: int) -> str | None:
    version = (
        DocumentVersion.objects.filter(session=session, turn__round=round_number, turn__kind=Turn.Kind.AGENT)
        .order_by("-number")
        .values_list("content", flat=True)
        .first()
    )
    return version


def _document_after_round(session: WritingSession, round_number: int) -> str | None:
    """The document as the agents left it at the end of `round_number` (their latest version so far)."""
    return (
        DocumentVersion.objects.filter(session=session, turn__round__lte=round_number, turn__kind=Turn.Kind.AGENT)
        .order_by("-number")
        .values_list("content", flat=True)
        .first()
    )


# A stop condition; each answers at one moment (before_step, after_turn or end_of_round).
Condition = ScoreThreshold | Convergence | CreditBudget


def conditions_for(session: WritingSession) -> list[Condition]:
    conditions: list[Condition] = []
    if session.score_threshold is not None:
        conditions.append(ScoreThreshold(session.score_threshold, session.threshold_agent_id))
    if session.convergence_percent is not None:
        conditions.append(Convergence(session.convergence_percent))
    if session.credit_budget is not None:
        conditions.append(CreditBudget(session.credit_budget))
    return conditions


def check_before_step(session: WritingSession) -> Stop | None:
    for condition in conditions_for(session):
        if hasattr(condition, "before_step") and (stop := condition.before_step(session)):
            return stop
    return None


def check_after_turn(session: WritingSession, turn: Turn, round_complete: bool) -> Stop | None:
    for condition in conditions_for(session):
        if hasattr(condition, "after_turn") and (stop := condition.after_turn(session, turn)):
            return stop
    if round_complete:
        for condition in conditions_for(session):
            if hasattr(condition, "end_of_round") and (stop := condition.end_of_round(session, turn.round)):
                return stop
    return None
