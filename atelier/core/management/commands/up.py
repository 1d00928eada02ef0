"""Start the whole app: ASGI web server + django-q2 worker (+ the embedded Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run Atelier: the daphne ASGI server (HTTP + WebSockets) and a django-q2 worker cluster, "
        "plus the embedded Redis when REDIS_URL is not set. Ctrl-C stops everything cleanly."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="Only start the web server.")

    def handle(self, *args, host: str, port: int, no_worker: bool, **options) -> None:
        from atelier.core import embedded_redis

        if settings.EMBEDDED_REDIS:
            embedded_redis.ensure_running(settings.EMBEDDED_REDIS_SOCKET)
        python = sys.executable
        children: list[tuple[str, subprocess.Popen]] = [
            (
                "web",
                subprocess.Popen([python, "-m", "daphne", "-b", host, "-p", str(port), "atelier.asgi:application"]),
            ),
        ]
        if not no_worker:
            children.append(("worker", subprocess.Popen([python, "manage.py", "qcluster"])))
        self.stdout.write(self.style.SUCCESS(f"Atelier is running at http://{host}:{port}/  (Ctrl-C to stop)"))
        if settings.EMBEDDED_REDIS:
            self.stdout.write(
                f"Embedded defaults: SQLite at {settings.DATABASES['default']['NAME']}, Redis at {settings.REDIS_URL}"
            )

        stopping = False

        def request_stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        exit_code = 0
        try:
            while not stopping:
                for name, proc in children:
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with code {proc.returncode}; stopping everything.")
                        exit_code = proc.returncode or 1
                        stopping = True
                time.sleep(0.2)
        finally:
            self.stdout.write("Stopping…")
            for _, proc in children:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # django-q2 finishes running tasks on SIGTERM
            deadline = time.monotonic() + 30
            for _, proc in children:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
            if settings.EMBEDDED_REDIS:
                embedded_redis.shutdown(settings.EMBEDDED_REDIS_SOCKET)
            self.stdout.write("Stopped.")
        if exit_code:
            sys.exit(exit_code)
