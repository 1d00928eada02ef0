"""Run a writing session in the foreground and watch it write, from the command line."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from orchestration import engine, services
from orchestration.management.terminal import POLL_SECONDS, EventFollower, TerminalPrinter
from orchestration.models import ACTIVE_STATUSES, FINISHED_STATUSES, SessionEvent, Status, Turn, WritingSession

BUSY_RETRY_SECONDS = 0.5  # another executor holds the lease: look again this often


def _number(value: float | None) -> str:
    return "–" if value is None else f"{round(float(value), 1):g}"


def format_scores(overall: float | None, scores: dict[str, Any] | None) -> str:
    parts = ", ".join(f"{name} {_number(value)}" for name, value in (scores or {}).items())
    text = f"overall {_number(overall)}"
    return f"{text} ({parts})" if parts else text


def structured_summary(turn_id: int | None) -> str:
    """A parallel-flow turn's structured result in one line: issues by severity, or decisions taken."""
    result = Turn.objects.filter(pk=turn_id).values_list("result", flat=True).first() if turn_id else None
    if not isinstance(result, dict):
        return ""
    if isinstance(result.get("issues"), list):
        counts = result.get("counts") or {}
        return (
            f"issues: {counts.get('high', 0)} high, {counts.get('medium', 0)} medium, {counts.get('low', 0)} low"
            f" (parsed from {result.get('tier', 'nothing')})"
        )
    if isinstance(result.get("sources"), list):  # pipeline research
        unknown = result.get("unknown_citations") or []
        return f"research: {len(result['sources'])} passages read, {len(result.get('cited') or [])} cited" + (
            f", {len(unknown)} citation(s) to no source" if unknown else ""
        )
    if isinstance(result.get("sections"), list):  # pipeline outline
        return f"outline: {len(result['sections'])} sections (parsed from {result.get('tier', 'nothing')})"
    if isinstance(result.get("edits"), list):  # pipeline review
        return (
            f"review: {len(result.get('flags') or [])} flags, {result.get('applied', 0)} edits applied, "
            f"{result.get('not_applied', 0)} not applied"
        )
    for kind in ("decisions", "resolutions"):
        if isinstance(result.get(kind), list):
            verdicts: defaultdict[str, int] = defaultdict(int)
            for item in result[kind]:
                verdicts[(item or {}).get("verdict") or "unclear"] += 1
            parts = ", ".join(f"{n} {verdict}" for verdict, n in verdicts.items()) or "none"
            return f"{kind}: {parts} (parsed from {result.get('tier', 'nothing')})"
    return ""


class Driver(threading.Thread):
    """Calls engine.drive until the session is no longer active, in its own thread.

    The main thread stays free to print events and to catch Ctrl-C. The engine's lease means a
    worker that picked up the task enqueued by start_session cannot run the session at the same
    time: drive() then returns "busy", and we wait while the worker does the work (we still print it).
    """

    def __init__(self, session_id: int, drive: Callable[[int], str] | None = None) -> None:
        super().__init__(name=f"run-session-{session_id}", daemon=True)
        self.session_id = session_id
        self.drive = drive or engine.drive  # a conversation's run has its own driver (conversations.runner)
        self.error: BaseException | None = None
        self.outcomes: list[str] = []

    def run(self) -> None:
        try:
            while True:
                outcome = self.drive(self.session_id)
                self.outcomes.append(outcome)
                status = WritingSession.objects.filter(pk=self.session_id).values_list("status", flat=True).first()
                if status not in ACTIVE_STATUSES:
                    return
                if outcome != "requeued":  # "requeued": the time budget was used; carry on at once
                    time.sleep(BUSY_RETRY_SECONDS if outcome == "busy" else POLL_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread; a thread cannot raise to it
            self.error = exc
        finally:
            connections.close_all()  # this thread's own connections


PLANNED_EVENTS = frozenset(
    {"plan", "plan_repair", "route", "task_verified", "task_repair", "task_failed", "assembly", "run_summary"}
)


class EventPrinter(TerminalPrinter):
    """Turns session events into terminal output: tokens with agent labels, scores, status changes."""

    def __init__(self, command: BaseCommand, *, stream: bool) -> None:
        super().__init__(command, stream=stream)
        self.labels: dict[int | None, str] = {}  # by turn id
        self.last_status = ""
        self.last_phase: tuple[int | None, str] | None = None  # (round, phase) announced last

    def label(self, turn_id: int | None) -> str:
        if turn_id is None:
            return "[Session]"
        if turn_id not in self.labels:
            # Attached mid-run: the turn started before we were watching.
            turn: Mapping[str, Any] = Turn.objects.filter(pk=turn_id).values("round", "agent_name").first() or {}
            self.labels[turn_id] = f"[Round {turn.get('round', '?')} · {turn.get('agent_name') or 'Agent'}]"
        return self.labels[turn_id]

    def handle(self, event: SessionEvent) -> None:
        payload = event.payload or {}
        kind = event.kind
        if kind in PLANNED_EVENTS:
            self.planned_event(kind, payload)
        elif kind == "turn_started":
            slot = payload.get("slot") or ""
            # The planned flow's calls name their task: one worker runs many tasks at once.
            what = f" · {slot}" if payload.get("phase") in ("working",) and slot else ""
            self.labels[event.turn_id] = f"[Round {payload.get('round')} · {payload.get('agent_name')}{what}]"
            self.announce_phase(payload.get("round"), payload.get("phase") or "")
            attempt = f", attempt {payload['attempt']}" if payload.get("attempt", 1) > 1 else ""
            if self.stream:
                self.begin_turn(event.turn_id, self.label(event.turn_id))
            else:
                self.line(f"{self.label(event.turn_id)} writing with {payload.get('model')}{attempt}…")
        elif kind == "chunk":
            if self.stream:
                self.stream_text(event.turn_id, payload.get("text", ""), self.label(event.turn_id))
        elif kind == "turn_finished":
            status = payload.get("status", "")
            if status == Turn.TurnStatus.COMPLETED:
                tier = f", parsed from {payload['tier']}" if payload.get("tier") else ""
                scores = format_scores(payload.get("overall"), payload.get("scores"))
                self.line(f"{self.label(event.turn_id)} scores: {scores}{tier}; {payload.get('credits', 0)} credit(s)")
                if summary := structured_summary(event.turn_id):
                    self.line(f"{self.label(event.turn_id)} {summary}")
            else:
                error = f": {payload['error']}" if payload.get("error") else ""
                self.line(f"{self.label(event.turn_id)} {status}{error}")
        elif kind == "version":
            ratio = payload.get("change_ratio")
            change = f" ({float(ratio):.0%} changed)" if ratio is not None else ""
            self.line(f"  → document version {payload.get('number')}{change}")
        elif kind == "status":
            status = payload.get("status", "")
            if status and status != self.last_status:
                self.last_status = status
                detail = f": {payload['stop_detail']}" if payload.get("stop_detail") else ""
                self.line(f"[Session] {Status(status).label if status in Status.values else status}{detail}")
        elif kind == "call_given_up":
            error = f" ({payload['error']})" if payload.get("error") else ""
            label = self.label(event.turn_id)
            self.line(f"{label} missing: gave up after retries; the round goes on without it{error}")
        elif kind == "human":
            self.line(f"[Session] Human intervention{': ' + payload['note'] if payload.get('note') else ''}")

    def planned_event(self, kind: str, payload: dict[str, Any]) -> None:
        """The planned flow's journal: the plan's waves, routing decisions, verdicts, repairs, the summary."""
        task = payload.get("task", "")
        if kind == "plan":
            if payload.get("valid"):
                waves = " ; ".join(", ".join(wave) for wave in payload.get("waves", []))
                self.line(f"[Plan] {len(payload.get('tasks', []))} tasks in waves: {waves}")
            else:
                self.line("[Plan] invalid: " + " ".join(payload.get("errors", [])))
        elif kind == "plan_repair":
            self.line("[Plan] asking the planner to repair its plan")
        elif kind == "route":
            scores = ", ".join(f"{c['model']} {c['score']}" for c in payload.get("candidates", []))
            self.line(f"[Task {task}] routed to {payload.get('chosen')} ({payload.get('why')} Scores: {scores})")
        elif kind == "task_verified":
            verdict = "passed" if payload.get("passed") else "failed"
            self.line(f"[Task {task}] {verdict} {payload.get('by')} check: {payload.get('notes', '')}")
        elif kind == "task_repair":
            self.line(f"[Task {task}] repairing ({payload.get('try')})")
        elif kind == "task_failed":
            self.line(f"[Task {task}] failed for good: {payload.get('notes', '')}")
        elif kind == "assembly":
            missing = ", ".join(m["task"] for m in payload.get("missing", []))
            parts = ", ".join(p["task"] for p in payload.get("parts", []))
            self.line(f"[Assembly] merging {parts}" + (f"; missing: {missing}" if missing else ""))
        elif kind == "run_summary" and payload:
            path = " → ".join(payload.get("critical_path", []))
            self.line(
                f"[Summary] {payload.get('done')} of {len(payload.get('tasks', []))} tasks done; critical path "
                f"{path} ({payload.get('critical_path_seconds')} s of calls, wall {payload.get('wall_seconds')} s)"
            )
            for row in payload.get("tasks", []):
                tries = f"{row['tries']} tr{'y' if row['tries'] == 1 else 'ies'}"
                self.line(
                    f"  {row['task']}: {row['status']} on {row['model'] or '-'} after {tries}, {row['seconds']} s, "
                    f"{row['input_tokens']}/{row['output_tokens']} tokens, {row['credits']} credit(s)"
                )

    def announce_phase(self, round_number: int | None, phase: str) -> None:
        """Parallel flows: say when the round moves to its next phase (writing, reviewing, synthesizing...)."""
        if not phase or self.last_phase == (round_number, phase):
            return
        self.last_phase = (round_number, phase)
        self.line(f"[Round {round_number}] {phase}")


class Command(BaseCommand):
    help = (
        "Run a writing session in this process (no worker needed) and print its tokens as they "
        "stream, prefixed by [Round N · Agent] at the start of each turn, then each turn's scores "
        "(overall and per criterion), the scores by round and why the run ended. What it does by "
        "status: a draft is started (with its owner's plan and credits; a refusal is printed and the "
        "exit status is 1); a paused session is resumed; a queued or running session is followed "
        "(and driven if no worker holds it); a finished session is continued only with --rounds N "
        "(N more rounds). For a draft, --rounds N sets its maximum rounds before starting. "
        "Any flow runs: parallel calls (editors, critics) interleave, each switch prefixed by its agent; "
        "each phase of a round is announced ([Round N] reviewing), reviews print their issue counts and "
        "syntheses their decisions, a roundtable ends with its convergence report, a pipeline with its "
        "report (sources, reviews, usage per stage). A planned run prints its plan's waves, each routing "
        "decision with its scores, verdicts and repairs, and a run summary; when it pauses for plan "
        "approval, run it again with --approve-plan. "
        "--output FILE writes the final document (UTF-8 Markdown), also after Ctrl-C; without it the "
        "final document is printed at the end. Ctrl-C stops the session cleanly (what was written is "
        "kept, marked stopped); a second Ctrl-C quits without waiting and the session finishes stopping "
        "in the background. Exit status: 0 completed or stopped by a rule, 1 refused/failed/paused "
        "(e.g. out of credits), 130 stopped with Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id", type=int, metavar="SESSION_ID")
        parser.add_argument("--output", metavar="FILE", help="Write the final document to this file.")
        parser.add_argument("--no-stream", action="store_true", help="Print turns and scores, not every token.")
        parser.add_argument(
            "--rounds", type=int, metavar="N", help="Draft: maximum rounds. Finished session: continue N more rounds."
        )
        parser.add_argument(
            "--approve-plan",
            action="store_true",
            help="A planned run waiting for approval: approve its plan and run the tasks.",
        )

    def handle(
        self, *args: Any, session_id: int, output: str | None, no_stream: bool, rounds: int | None, **options: Any
    ) -> None:
        session = WritingSession.objects.select_related("project__owner").filter(pk=session_id).first()
        if session is None:
            raise CommandError(f"No session with id {session_id}.")
        output_path = self._output_path(output)
        follower = EventFollower(session.pk, after=session.last_seq)  # only what happens from now on is printed
        self._begin(session, rounds, approve=bool(options.get("approve_plan")))

        printer = EventPrinter(self, stream=not no_stream)
        driver = Driver(session.pk)
        driver.start()
        interrupted = False
        try:
            follower.follow(driver, printer)
        except KeyboardInterrupt:
            interrupted = True
            printer.end_line()
            self.stderr.write("Stopping the session… (press Ctrl-C again to quit without waiting)")
            try:
                services.stop_session(session=session)
            except services.ServiceError:
                pass  # it finished on its own in the meantime
            try:
                follower.follow(driver, printer)
            except KeyboardInterrupt:
                raise CommandError(
                    f"Quit without waiting; session {session.pk} finishes stopping in the background.",
                    returncode=130,
                ) from None
        printer.end_line()
        if driver.error is not None:
            raise CommandError(f"The engine failed: {driver.error!r}. Session {session.pk} may need a retry.")

        session.refresh_from_db()
        self._summary(session, output_path)
        if interrupted:
            raise CommandError("Stopped with Ctrl-C.", returncode=130)
        if session.status == Status.FAILED:
            raise CommandError(f"Session {session.pk} failed: {session.stop_detail or 'see the session page'}")
        if session.status == Status.PAUSED:
            raise CommandError(
                f"Session {session.pk} is paused: {session.stop_detail or session.get_stop_reason_display()}"
            )

    # --- steps -----------------------------------------------------------------------------------

    def _output_path(self, output: str | None) -> Path | None:
        if not output:
            return None
        path = Path(output).expanduser()
        if path.is_dir():
            raise CommandError(f"--output {output!r} is a directory; give a file name.")
        if not path.parent.is_dir():
            raise CommandError(f"--output {output!r}: the directory {str(path.parent)!r} does not exist.")
        return path

    def _begin(self, session: WritingSession, rounds: int | None, approve: bool = False) -> None:
        """Start, resume or continue the session as its status requires; refusals become CommandErrors."""
        owner = session.project.owner
        status = session.status
        if rounds is not None and status not in (Status.DRAFT, *FINISHED_STATUSES):
            raise CommandError(f"--rounds only applies to a draft or a finished session; this one is {status}.")
        try:
            if status == Status.DRAFT:
                if rounds is not None:
                    if not 1 <= rounds <= services.MAX_ROUNDS_LIMIT:
                        raise CommandError(
                            f"--rounds must be between 1 and {services.MAX_ROUNDS_LIMIT} (got {rounds})."
                        )
                    WritingSession.objects.filter(pk=session.pk).update(max_rounds=rounds)
                    session.max_rounds = rounds
                services.start_session(session=session, user=owner)
                verb = "Started"
            elif status == Status.PAUSED and approve and session.stop_reason == "awaiting_approval":
                services.approve_plan(session=session, user=owner)
                verb = "Approved the plan of"
            elif status == Status.PAUSED:
                services.resume_session(session=session, user=owner)
                verb = "Resumed"
            elif status in FINISHED_STATUSES:
                if rounds is None:
                    raise CommandError(
                        f"Session {session.pk} has already finished ({session.get_status_display().lower()}: "
                        f"{session.stop_detail or session.get_stop_reason_display()}). "
                        "Pass --rounds N to continue it for N more rounds."
                    )
                services.continue_session(session=session, extra_rounds=rounds, user=owner)
                verb = "Continued"
            else:
                verb = "Following"
        except services.ServiceError as exc:
            raise CommandError(f"Session {session.pk} cannot run: {exc.message}") from None
        session.refresh_from_db()
        self.stdout.write(
            f"{verb} session {session.pk} {session.title!r} ({session.max_rounds} round(s) at most). Ctrl-C stops it."
        )

    def _summary(self, session: WritingSession, output_path: Path | None) -> None:
        from billing.services import get_balance

        turns = Turn.objects.filter(session=session, kind=Turn.Kind.AGENT, status=Turn.TurnStatus.COMPLETED)
        by_round: dict[int, list[Turn]] = defaultdict(list)
        for turn in turns.order_by("round", "pk"):
            by_round[turn.round].append(turn)
        out = self.stdout
        out.write("")
        out.write("Scores by round:" if by_round else "No turn completed.")
        for number, round_turns in by_round.items():
            for index, turn in enumerate(round_turns):
                prefix = f"  Round {number}" if index == 0 else " " * len(f"  Round {number}")
                out.write(f"{prefix}  {turn.agent_name}: {format_scores(turn.overall_score, turn.scores)}")
        if session.flow == "roundtable":
            from orchestration.flows.roundtable import convergence_report, report_markdown

            out.write("")
            out.write(report_markdown(session, convergence_report(session)))
        if session.flow == "pipeline":
            from orchestration.pipeline_report import pipeline_report
            from orchestration.pipeline_report import report_markdown as pipeline_markdown

            out.write("")
            out.write(pipeline_markdown(session, pipeline_report(session)))
        reason = session.get_stop_reason_display() if session.stop_reason else session.get_status_display()
        same = session.stop_detail.rstrip(".") == reason.rstrip(".")
        detail = f" ({session.stop_detail})" if session.stop_detail and not same else ""
        out.write(f"Ended: {session.get_status_display()} — {reason}{detail}")

        document = session.final_document or session.document
        if output_path is not None:
            text = document if document.endswith("\n") or not document else document + "\n"
            try:
                output_path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Could not write {str(output_path)!r}: {exc.strerror or exc}.") from None
            written = f"; final document written to {output_path}"
        else:
            out.write("")
            out.write("===== Final document =====")
            out.write(document or "(empty)")
            out.write("===== End of document =====")
            written = ""
        words = len(document.split())
        out.write(
            self.style.SUCCESS(
                f"Session {session.pk}: {session.get_status_display().lower()} after {session.current_round} round(s), "
                f"{turns.count()} turn(s), {session.input_tokens:,} input / {session.output_tokens:,} output tokens, "
                f"{session.credits_used:,} credit(s) used ({get_balance(session.project.owner):,} left), "
                f"{words:,} words{written}."
            )
        )
