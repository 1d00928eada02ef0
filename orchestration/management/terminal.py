"""What `run_session` and `chat` share to print a run in the terminal: a printer that streams turn text under
a label, and a follower that prints a run's events as they arrive until its driver thread is done."""

from __future__ import annotations

import threading
import time

from django.core.management.base import BaseCommand

from orchestration.events import events_after
from orchestration.models import SessionEvent

POLL_SECONDS = 0.05  # how often the follower looks for new events: chunks arrive in ~40 ms batches


class TerminalPrinter:
    """Writes to a command's stdout without breaking lines: streamed text stays on its line under the label
    of the turn writing it, and a full line (`line`) first ends a line left open. Subclasses turn events
    into output in `handle`."""

    def __init__(self, command: BaseCommand, *, stream: bool) -> None:
        self.command = command
        self.stream = stream  # print every token (True) or whole replies / turn lines only
        self.open_turn: int | None = None  # the turn whose text was printed last
        self.mid_line = False

    def handle(self, event: SessionEvent) -> None:
        """Print one event (subclasses)."""
        raise NotImplementedError

    def write(self, text: str) -> None:
        """Write `text` as is and flush, so a token shows the moment it arrives."""
        self.command.stdout.write(text, ending="")
        self.command.stdout.flush()

    def line(self, text: str) -> None:
        """Write `text` on a line of its own."""
        self.end_line()
        self.write(text + "\n")

    def end_line(self) -> None:
        """End a line that streamed text left open."""
        if self.mid_line:
            self.write("\n")
            self.mid_line = False
        self.open_turn = None

    def begin_turn(self, turn_id: int | None, label: str) -> None:
        """Start a new line of streamed text for `turn_id`, prefixed by its label."""
        self.end_line()
        self.write(label + " ")
        self.open_turn = turn_id
        self.mid_line = True

    def stream_text(self, turn_id: int | None, text: str, label: str) -> None:
        """Write a chunk of `turn_id`'s text; parallel turns interleave, so each switch repeats the label."""
        if self.open_turn != turn_id:
            self.begin_turn(turn_id, label)
        self.write(text)
        if text:
            self.mid_line = not text.endswith("\n")


class EventFollower:
    """Prints the events of session `session_id` after sequence number `after`.

    `after` advances with each printed event, so following again after a Ctrl-C in the middle of a batch
    resumes exactly where printing stopped.
    """

    def __init__(self, session_id: int, *, after: int) -> None:
        self.session_id = session_id
        self.after = after

    def follow(self, driver: threading.Thread, printer: TerminalPrinter) -> None:
        """Print events as they arrive until `driver` has ended and no event is left."""
        while True:
            alive = driver.is_alive()
            batch = events_after(self.session_id, self.after)
            for event in batch:
                printer.handle(event)
                self.after = event.seq
            if not alive and not batch:
                return  # the driver ended before this read: nothing more will come
            if not batch:
                time.sleep(POLL_SECONDS)
