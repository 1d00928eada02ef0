"""Start the real app processes (daphne ASGI server, django-q2 worker) against the test database.

Used by browser tests and cross-process tests. The test must use `transactional_db` (or
`live_db`) so its data is committed and visible to the subprocesses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must see the *test* database."""
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or ''}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}@"
            f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env.setdefault("Q_CLUSTER_NAME", settings.Q_CLUSTER["name"])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(extra)
    return env


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_group(self) -> None:
        """SIGKILL the process and its children: a machine dying mid-task."""
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self, sig: int | None = None, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()


def _spawn(name: str, args: list[str], env: dict[str, str]) -> Process:
    log_dir = Path(settings.VAR_DIR) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    handle = open(log_path, "w")  # noqa: SIM115 - closed with the process
    # Own process group, so a test can SIGKILL the process and all its children at once.
    proc = subprocess.Popen(
        args, cwd=BASE_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Process(name, proc, log_path)


def start_web(port: int | None = None, *, timeout: float = 30, **env: str) -> tuple[Process, str]:
    """Start daphne on the test database; returns once it answers /healthz (within `timeout` seconds)."""
    port = port or free_port()
    process = _spawn(
        "web",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "atelier.asgi:application"],
        subprocess_env(**env),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # 503 is fine: the server answers
        except OSError:
            if process.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"web server did not start:\n{process.log()}") from None
            time.sleep(0.1)
    return process, url


def start_worker(**env: str) -> Process:
    process = _spawn("worker", [sys.executable, "manage.py", "qcluster"], subprocess_env(**env))
    return process


def wait_for(predicate, timeout: float = 20, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@dataclass
class LiveApp:
    url: str
    web: Process
    worker: Process | None
    extra: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        for process in [self.web, self.worker, *self.extra]:
            if process is not None:
                process.stop()
