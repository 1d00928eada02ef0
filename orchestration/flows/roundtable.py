"""Roundtable: parallel critics with structured issues, a moderator, convergence rules and a report.

One round: every critic reviews the current document in parallel and returns structured issues
(severity, passage, problem, fix) plus rubric scores; then the moderator revises the document to resolve
them and says, issue by issue, what it did. If the session starts with no document, the moderator first
drafts one from the brief (round 1 only).

Convergence rules (flow_config, each selectable), checked once a round is complete, in this order:
- ``stop_when_no_high_issues`` (default on): the round's critics raised no high-severity issue;
- ``stop_below_change_percent`` (default 5; null = off): the moderator changed less than that share of
  the document;
- max iterations: the session's max rounds (always on).
The stop reason (and its detail) names the rule that fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
from orchestration.flows.editorial import review_step, validate_roles
from orchestration.flows.recipes import number_issues
from orchestration.flows.structured import SEVERITIES, severity_counts
from orchestration.models import Agent, DocumentVersion, StopReason, Turn, WritingSession

CRITIC, MODERATOR = "critic", "moderator"

DEFAULT_CONFIG: dict[str, Any] = {"stop_when_no_high_issues": True, "stop_below_change_percent": 5.0}


class ConfigError(ValueError):
    """flow_config is not valid; the message says what to change."""


def clean_config(raw: Any) -> dict[str, Any]:
    """Validate a roundtable flow_config and fill in defaults. Raises ConfigError with a clear message.

    Shape: {"stop_when_no_high_issues": bool, "stop_below_change_percent": number 0-100 | null}.
    """
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("The roundtable settings must be an object.")
    unknown = sorted(set(raw) - set(DEFAULT_CONFIG))
    if unknown:
        raise ConfigError(f"Unknown roundtable setting(s): {', '.join(unknown)}.")
    config = {**DEFAULT_CONFIG, **raw}
    if not isinstance(config["stop_when_no_high_issues"], bool):
        raise ConfigError("“Stop when no high-severity issues are left” must be on or off.")
    percent = config["stop_below_change_percent"]
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise ConfigError("The change threshold must be a number of percent, or empty to turn the rule off.")
        if not 0 < percent <= 100:
            raise ConfigError("The change threshold must be more than 0 % and at most 100 %.")
        config["stop_below_change_percent"] = float(percent)
    return config


class RoundtableFlow:
    name = "roundtable"
    description = (
        "Critics review the document in parallel and raise issues by severity; a moderator resolves them "
        "in a revision; it stops when the document converges, with a report."
    )
    diagram = "[Critic ‖ Critic ‖ …] → Moderator → (converged? stop : next round)"
    roles = (CRITIC, MODERATOR)
    phases = (("drafting", "Drafting"), ("reviewing", "Reviewing"), ("moderating", "Moderating"))

    def next_step(self, session: WritingSession) -> Step | Finished:
        roles = agents_by_role(session)
        critics, moderators = roles.get(CRITIC, []), roles.get(MODERATOR, [])
        if not (critics and moderators):
            return Finished(StopReason.ERROR, "The roundtable needs at least one critic and a moderator.")
        moderator = moderators[0]
        try:
            config = clean_config(session.flow_config)
        except ConfigError as error:
            return Finished(StopReason.ERROR, str(error))
        round_number = max(1, last_round_started(session))
        last_moderation: int | None = None  # the previous round's moderation, once this loop has seen it
        while True:
            if round_number > session.max_rounds:
                return Finished(
                    StopReason.MAX_ROUNDS, f"Max iterations: completed {session.max_rounds} rounds without converging."
                )
            state = round_state(session, round_number)
            draft = state.get("draft")
            if round_number == 1 and not session.document.strip() and (draft is None or draft.turn_id is None):
                call = AgentCall(
                    moderator, slot="draft", recipe=Recipe.REVISE, output=Output.DOCUMENT, phase="drafting"
                )
                return Step(round=round_number, calls=[call], phase="drafting")
            if last_moderation is None and round_number > 1:
                last_moderation = _moderation_of(session, round_number - 1)
            # Critics after round 1 read how the moderator resolved the previous round's issues.
            inputs = (last_moderation,) if last_moderation else ()
            done, review = review_step(state, critics, round_number, inputs=inputs)
            if review is not None:
                return review
            if not done:
                return Finished(StopReason.ERROR, f"No critic could review the document in round {round_number}.")
            moderate = state.get("moderate")
            if moderate is None or moderate.turn_id is None:
                call = AgentCall(
                    moderator,
                    slot="moderate",
                    recipe=Recipe.MODERATE,
                    output=Output.DOCUMENT,
                    inputs=tuple(done),
                    phase="moderating",
                )
                return Step(round=round_number, calls=[call], phase="moderating")
            if round_number > session.continued_at_round:
                stop = converged(session, round_number, done, moderate.turn_id, config)
                if stop is not None:
                    return stop
            last_moderation = moderate.turn_id
            round_number += 1

    def validate(self, session: WritingSession, agents: list[Agent]) -> list[str]:
        problems = validate_roles(agents, required={CRITIC: (1, None), MODERATOR: (1, 1)}, flow_label="The roundtable")
        try:
            clean_config(session.flow_config)
        except ConfigError as error:
            problems.append(str(error))
        return problems

    def call_shape(self, session: WritingSession, roles: list[str]) -> CallShape:
        moderators = agents_by_role(session).get(MODERATOR, [])
        drafts = not session.document.strip() and session.current_round == 0
        draft = frozenset(moderators[:1]) if drafts else frozenset()
        return CallShape(
            calls_per_round=[1 if (r or "").strip().lower() in self.roles else 0 for r in roles],
            reviewer_roles=(CRITIC,),
            reader_roles=(MODERATOR,),
            extra_first_round_calls=draft,
        )


def _moderation_of(session: WritingSession, round_number: int) -> int | None:
    """The completed moderation turn of a round, if any."""
    return (
        Turn.objects.filter(session=session, round=round_number, slot="moderate", status=Turn.TurnStatus.COMPLETED)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )


RESOLUTION_LINES = 20  # the previous round's resolutions a critic reads, most severe first
_SHORT = 140


def _short(text: str, limit: int = _SHORT) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def previous_resolutions(moderation_ids: tuple[int, ...]) -> list[tuple[str, str]]:
    """[(moderator name, text)]: how the moderator resolved the previous round's issues, short, for critics.

    One line per issue (at most RESOLUTION_LINES, most severe first): id, severity, critic, the problem and
    the moderator's verdict with its reason. Empty when the ids are not completed moderation turns.
    """
    turns = Turn.objects.filter(pk__in=list(moderation_ids), slot="moderate", status=Turn.TurnStatus.COMPLETED)
    feedback = []
    for turn in turns.only("pk", "round", "agent_name", "result"):
        result = turn.result if isinstance(turn.result, dict) else {}
        resolutions = {r.get("id"): r for r in result.get("resolutions") or [] if isinstance(r, dict)}
        issues = issues_for_inputs(list(result.get("inputs") or []))
        issues.sort(key=lambda i: SEVERITIES.index(i["severity"]) if i.get("severity") in SEVERITIES else 9)
        lines = [
            f"Round {turn.round}: how the moderator resolved the critics' issues. Do not raise a fixed issue again "
            "unless the document still shows it; raise a declined one again only if it still matters, and say why."
        ]
        for issue in issues[:RESOLUTION_LINES]:
            resolution = resolutions.get(issue["id"]) or {}
            verdict = resolution.get("verdict") or "no answer"
            reason = f" ({_short(resolution['reason'], 100)})" if resolution.get("reason") else ""
            lines.append(
                f"- {issue['id']} [{issue.get('severity', 'medium')}] from {issue['reviewer']}: "
                f"{_short(issue.get('problem', ''))} -> {verdict}{reason}"
            )
        if len(issues) > RESOLUTION_LINES:
            lines.append(f"- …and {len(issues) - RESOLUTION_LINES} more, less severe.")
        if len(lines) == 1:
            lines.append("- The critics raised no issues.")
        feedback.append((turn.agent_name, "\n".join(lines)))
    return feedback


def _issues_of(turn_ids: list[int]) -> list[dict[str, Any]]:
    issues: list[dict[str, Any]] = []
    for result in Turn.objects.filter(pk__in=turn_ids).values_list("result", flat=True):
        if isinstance(result, dict) and isinstance(result.get("issues"), list):
            issues.extend(result["issues"])
    return issues


def moderator_change_percent(moderate_turn_id: int) -> float:
    """How much of the document the moderator's turn changed, in percent (0 when it changed nothing)."""
    ratio = DocumentVersion.objects.filter(turn_id=moderate_turn_id).values_list("change_ratio", flat=True).first()
    return 0.0 if ratio is None else ratio * 100


def converged(
    session: WritingSession, round_number: int, review_ids: list[int], moderate_id: int, config: dict[str, Any]
) -> Finished | None:
    """The first convergence rule that fires for a complete round, or None."""
    if config["stop_when_no_high_issues"]:
        high = severity_counts(_issues_of(review_ids))["high"]
        if high == 0:
            return Finished(
                StopReason.NO_HIGH_ISSUES,
                f"Converged (no high-severity issues left): the critics raised none in round {round_number}.",
            )
    percent = config["stop_below_change_percent"]
    if percent is not None:
        changed = moderator_change_percent(moderate_id)
        if changed < percent:
            return Finished(
                StopReason.CONVERGED,
                f"Converged (document changed less than {percent:g} %): the moderator changed {changed:.1f} % "
                f"in round {round_number}.",
            )
    return None


# --- The convergence report ----------------------------------------------------------------------------


@dataclass
class ReportRound:
    number: int
    counts: dict[str, int]
    change_percent: float | None  # None: the moderator has not finished this round
    critics: list[dict[str, Any]]  # [{name, turn_id, overall, scores, counts, missing, error}]
    issues: list[dict[str, Any]]  # numbered, with each resolution attached
    resolutions_tier: str = ""


@dataclass
class ConvergenceReport:
    rounds: list[ReportRound] = field(default_factory=list)
    verdict: str = ""
    stop_reason: str = ""
    remaining: dict[str, int] = field(default_factory=dict)  # issues of the last round not fixed, by severity

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": [
                {
                    "round": r.number,
                    "issue_counts": r.counts,
                    "change_percent": None if r.change_percent is None else round(r.change_percent, 1),
                    "critics": r.critics,
                    "issues": r.issues,
                }
                for r in self.rounds
            ],
            "verdict": self.verdict,
            "stop_reason": self.stop_reason,
            "unresolved": self.remaining,
        }


def convergence_report(session: WritingSession) -> ConvergenceReport:
    """Per round: issue counts by severity, the change ratio, each critic's scores, the moderator's
    resolutions (attached to the issues they answer), and the final verdict. Reads the database only."""
    turns = list(
        Turn.objects.filter(session=session, kind=Turn.Kind.AGENT)
        .exclude(slot="")
        .order_by("round", "pk")
        .only("pk", "round", "slot", "status", "result", "agent_id", "agent_name", "overall_score", "scores", "error")
    )
    # Keyed by agent id; a turn whose agent was deleted has agent_id None and sorts last.
    order: dict[int | None, int] = {
        pk: i for i, pk in enumerate(session.agents.order_by("order", "pk").values_list("pk", flat=True))
    }
    report = ConvergenceReport(stop_reason=session.stop_reason)
    by_round: dict[int, list[Turn]] = {}
    for turn in turns:
        by_round.setdefault(turn.round, []).append(turn)
    for number, round_turns in sorted(by_round.items()):
        report.rounds.append(_report_round(number, round_turns, order))
    if report.rounds:
        last = report.rounds[-1]
        remaining = [i for i in last.issues if not (i.get("resolution") and i["resolution"].get("verdict") == "fixed")]
        report.remaining = severity_counts(remaining)
    report.verdict = _verdict(session, report)
    return report


def _report_round(number: int, round_turns: list[Turn], order: dict[int | None, int]) -> ReportRound:
    """One round of the convergence report from its turns; `order` ranks agent ids in team order."""
    reviews = sorted(
        [t for t in round_turns if t.slot.startswith("review:") and t.status == Turn.TurnStatus.COMPLETED],
        key=lambda t: order.get(t.agent_id, 999),
    )
    given_up = [
        t
        for t in round_turns
        if t.slot.startswith("review:") and isinstance(t.result, dict) and t.result.get("given_up")
    ]
    moderate = next((t for t in round_turns if t.slot == "moderate" and t.status == Turn.TurnStatus.COMPLETED), None)
    numbered = issues_for_inputs(
        [t.pk for t in reviews]
        if moderate is None
        else (moderate.result or {}).get("inputs") or [t.pk for t in reviews],
        {t.pk: t for t in reviews},
    )
    resolutions = {r.get("id"): r for r in ((moderate.result or {}).get("resolutions") or [])} if moderate else {}
    for issue in numbered:
        issue["resolution"] = resolutions.get(issue["id"])
    return ReportRound(
        number=number,
        counts=severity_counts(numbered),
        change_percent=moderator_change_percent(moderate.pk) if moderate else None,
        critics=_critics(reviews, given_up),
        issues=numbered,
        resolutions_tier=(moderate.result or {}).get("tier", "") if moderate else "",
    )


def _critics(reviews: list[Turn], given_up: list[Turn]) -> list[dict[str, Any]]:
    """A round's critics: each completed review's scores and issue counts, then each critic that gave up
    (and has no completed review that round) marked missing, with its error."""
    return [
        {
            "name": t.agent_name,
            "turn_id": t.pk,
            "overall": t.overall_score,
            "scores": t.scores or {},
            "counts": severity_counts((t.result or {}).get("issues") or []),
            "tier": (t.result or {}).get("tier", ""),
            "missing": False,
        }
        for t in reviews
    ] + [
        {
            "name": t.agent_name,
            "turn_id": t.pk,
            "overall": None,
            "scores": {},
            "counts": {},
            "missing": True,
            "error": t.error,
        }
        for t in given_up
        if not any(r.agent_id == t.agent_id for r in reviews)
    ]


def issues_for_inputs(input_ids: list[int], reviews: dict[int, Turn] | None = None) -> list[dict[str, Any]]:
    """The numbered issues of the given review turns, in the given order (I1, I2...)."""
    if reviews is None or any(pk not in reviews for pk in input_ids):
        reviews = {t.pk: t for t in Turn.objects.filter(pk__in=input_ids).only("pk", "agent_name", "result")}
    rows = []
    for pk in input_ids:
        turn = reviews.get(pk)
        if turn is not None:
            rows.append((pk, turn.agent_name, list((turn.result or {}).get("issues") or [])))
    return number_issues(rows, "I")


def _verdict(session: WritingSession, report: ConvergenceReport) -> str:
    if session.status not in ("completed", "stopped", "failed"):
        return "Still running."
    rounds = len(report.rounds)
    base = session.stop_detail or session.get_stop_reason_display()
    remaining = report.remaining
    open_text = ", ".join(f"{remaining.get(s, 0)} {s}" for s in SEVERITIES)
    return f"{base} After {rounds} round{'s' if rounds != 1 else ''}, issues not marked fixed: {open_text}."


def report_markdown(session: WritingSession, report: ConvergenceReport) -> str:
    """The report as Markdown, for the export."""
    lines = [f"# Convergence report: {session.title}", "", f"**Verdict:** {report.verdict}", ""]
    for r in report.rounds:
        change = "not finished" if r.change_percent is None else f"{r.change_percent:.1f} %"
        lines += [
            f"## Round {r.number}",
            "",
            f"- Issues: {r.counts['high']} high, {r.counts['medium']} medium, {r.counts['low']} low",
            f"- Document changed by the moderator: {change}",
            "",
            "| Critic | Overall | Scores | High | Medium | Low |",
            "|---|---|---|---|---|---|",
        ]
        for c in r.critics:
            if c["missing"]:
                lines.append(f"| {c['name']} | missing | {c.get('error', '')[:80]} | | | |")
                continue
            scores = ", ".join(f"{k} {v:g}" for k, v in c["scores"].items()) or "none"
            overall = "–" if c["overall"] is None else f"{c['overall']:.1f}"
            lines.append(
                f"| {c['name']} | {overall} | {scores} | "
                f"{c['counts']['high']} | {c['counts']['medium']} | {c['counts']['low']} |"
            )
        if r.issues:
            lines += ["", "| Issue | Critic | Severity | Problem | Moderator |", "|---|---|---|---|---|"]
            for issue in r.issues:
                resolution = issue.get("resolution") or {}
                verdict = resolution.get("verdict") or "no answer"
                note = resolution.get("reason", "")
                problem = issue.get("problem", "").replace("|", "\\|")
                answer = verdict + (": " + note.replace("|", "\\|") if note else "")
                lines.append(f"| {issue['id']} | {issue['reviewer']} | {issue['severity']} | {problem} | {answer} |")
        lines.append("")
    return "\n".join(lines)
