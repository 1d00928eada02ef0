"""Start the whole app: ASGI web server + django-q2 worker (+ the embedded Redis), and keep it up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

BACKOFF_START = 1.0  # seconds before the first restart of a process that died
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a process that ran this long gets its backoff reset when it dies


@dataclass
class Child:
    """One supervised process. Each runs in its own process group so we can stop all it spawned."""

    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    restart_at: float | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process of the last start(); only valid once started."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Command(BaseCommand):
    help = (
        "Run Atelier: the daphne ASGI server (HTTP + WebSockets) and a django-q2 worker cluster, "
        "plus the embedded Redis when REDIS_URL is not set. A process that exits is restarted with "
        f"backoff ({BACKOFF_START:g} s doubling to {BACKOFF_MAX:g} s; reset after {HEALTHY_AFTER:g} s of "
        "health), so a dead worker never takes the web server down; sessions it was driving resume "
        "by themselves. Ctrl-C or SIGTERM stops everything: SIGTERM to each process group, then "
        "SIGKILL after --shutdown-timeout seconds (an interrupted turn is resumed on the next start)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="Only start the web server.")
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=15.0,
            help="Seconds to wait after SIGTERM before SIGKILLing what is left (default 15).",
        )

    def handle(
        self, *args: Any, host: str, port: int, no_worker: bool, shutdown_timeout: float, **options: Any
    ) -> None:
        from atelier.core import embedded_redis, metrics

        if shutdown_timeout <= 0:
            raise CommandError("--shutdown-timeout must be a positive number of seconds.")
        if settings.EMBEDDED_REDIS:
            embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)
        # Every process of the app starts below: the previous run's metric files would only inflate the counters.
        metrics.clear_multiprocess_dir()
        python = sys.executable
        children = [Child("web", [python, "-m", "daphne", "-b", host, "-p", str(port), "atelier.asgi:application"])]
        if not no_worker:
            children.append(Child("worker", [python, "manage.py", "qcluster"]))

        stopping = False

        def request_stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        for child in children:
            child.start()
            self.stdout.write(f"{child.name} started (pid {child.process.pid})")
        self.stdout.write(self.style.SUCCESS(f"Atelier is running at http://{host}:{port}/  (Ctrl-C to stop)"))
        if settings.EMBEDDED_REDIS:
            self.stdout.write(
                f"Embedded defaults: SQLite at {settings.DATABASES['default']['NAME']}, Redis at {settings.REDIS_URL}"
            )
        try:
            while not stopping:
                self._supervise(children)
                time.sleep(0.2)
        finally:
            self._stop_all(children, shutdown_timeout)
            if settings.EMBEDDED_REDIS:
                embedded_redis.shutdown(settings.EMBEDDED_REDIS_SOCKET)
            self.stdout.write(f"Stopped. ({sum(c.restarts for c in children)} restart(s) while running)")

    def _supervise(self, children: list[Child]) -> None:
        now = time.monotonic()
        for child in children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._ensure_redis()
                    child.start()
                    child.restarts += 1
                    self.stdout.write(f"{child.name} restarted (pid {child.process.pid})")
                continue
            if child.running():
                continue
            code = child.process.returncode
            child.signal_group(signal.SIGKILL)  # whatever it left behind (qcluster's worker processes)
            if now - child.started_at >= HEALTHY_AFTER:
                child.backoff = BACKOFF_START
            delay = child.backoff
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)
            child.restart_at = now + delay
            self.stderr.write(f"{child.name} exited with code {code}; restarting it in {delay:g} s.")

    def _ensure_redis(self) -> None:
        if settings.EMBEDDED_REDIS:
            from atelier.core import embedded_redis

            embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)

    def _stop_all(self, children: list[Child], timeout: float) -> None:
        self.stdout.write("Stopping…")
        live = [c for c in children if c.running()]
        for child in live:
            # The leader only: qcluster then stops its own processes in order (tasks finish if they can).
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in live:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop within {timeout:g} s; killing it.")
            child.signal_group(signal.SIGKILL)  # the group: nothing it spawned outlives us
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} (pid {child.process.pid}) could not be killed.")
