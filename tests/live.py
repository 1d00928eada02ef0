"""Start the real app processes (daphne ASGI server, django-q2 worker) against the test database.

Used by browser tests and cross-process tests. The test must use `transactional_db` (or
`live_db`) so its data is committed and visible to the subprocesses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
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
        """Send `sig` (SIGTERM by default) and wait up to `timeout` seconds for the process to exit,
        then SIGKILL its process group. Does nothing if it has already exited."""
        stop_all([self], sig=sig, timeout=timeout)

    def _signal(self, sig: int | None) -> bool:
        """Send `sig` (SIGTERM if None); False if the process had already exited."""
        if self.proc.poll() is not None:
            return False
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        return True

    def _wait_or_kill(self, deadline: float) -> None:
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill_group()


def stop_all(processes: Iterable[Process | None], *, sig: int | None = None, timeout: float = 15) -> None:
    """Stop `processes` (None entries skipped) at the same time: `sig` (SIGTERM by default) to each, then
    wait up to `timeout` seconds for all of them, SIGKILLing the process group of any still running.

    Each shuts down as gracefully as alone; stopping them side by side costs the slowest one's shutdown
    (about 1.5 s for a qcluster) instead of the sum.
    """
    signalled = [process for process in processes if process is not None and process._signal(sig)]
    deadline = time.monotonic() + timeout
    for process in signalled:
        process._wait_or_kill(deadline)


def _spawn(name: str, args: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> Process:
    log_dir = Path(settings.VAR_DIR) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    handle = open(log_path, "w")  # noqa: SIM115 - closed with the process
    # Own process group, so a test can SIGKILL the process and all its children at once.
    proc = subprocess.Popen(
        args,
        cwd=BASE_DIR,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    return Process(name, proc, log_path)


def start_web(*, timeout: float = 60, **env: str) -> tuple[Process, str]:
    """Start daphne on the test database; returns (process, base URL) once it answers /healthz
    (within `timeout` seconds), or raises RuntimeError with its log.

    The listening socket is bound here and handed to daphne (`--fd`), so no other process can take
    the port between choosing it and daphne binding it: with both CI set-ups running at once, a fake
    server once did, answered /healthz with a 404 and served the browser test its 404 pages.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # connections wait in the backlog until daphne accepts them
    port = listener.getsockname()[1]
    try:
        process = _spawn(
            "web",
            [sys.executable, "-m", "daphne", "--fd", str(listener.fileno()), "atelier.asgi:application"],
            subprocess_env(**env),
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()  # daphne holds its own copy
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout  # a loaded 2-core machine can take half a minute to import Django
    while not is_atelier_health(url):
        if process.proc.poll() is not None or time.monotonic() > deadline:
            process.stop()  # never leave a half-started server behind
            raise RuntimeError(f"web server did not start:\n{process.log()}")
        time.sleep(0.1)
    return process, url


def is_atelier_health(url: str) -> bool:
    """True when `url`/healthz answers as Atelier's health check does: 200 or 503 with its JSON."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code != 503:  # degraded (no worker heartbeat yet) still means the server answers
            return False
        body = error.read()
    except OSError:
        return False
    try:
        return "checks" in json.loads(body)
    except ValueError:
        return False


def start_worker(**env: str) -> Process:
    process = _spawn("worker", [sys.executable, "manage.py", "qcluster"], subprocess_env(**env))
    return process


def process_tree(pid: int) -> list[int]:
    """`pid` first, then all its descendants (e.g. a qcluster and the django-q2 processes it forked).

    Read from /proc (Linux); processes that exit while it reads are left out. Empty descendants if
    `pid` has none; `pid` itself is always the first element, even if it has already exited.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(children.get(current, []))
    return out


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

    def stop(self, timeout: float = 5) -> None:
        """Stop the web, worker and extra processes side by side (`stop_all`): SIGTERM, then SIGKILL for
        any still running after `timeout` seconds.

        A test's teardown calls it; nothing after it reads what the processes did while stopping, and
        the transactional test's flush comes next. An idle app stops in about 2 s; a worker in the
        middle of a run waits for it (django-q2 finishes the task) and a daphne with a page's socket
        open waits for that: the short timeout bounds both.
        """
        stop_all([self.web, self.worker, *self.extra], timeout=timeout)


def start_app(
    *, worker: bool = True, seed: bool = True, env: Mapping[str, str] | None = None, **worker_env: str
) -> LiveApp:
    """Daphne and (unless `worker=False`) a django-q2 worker with `worker_env` (e.g. DEMO_TOKENS_PER_SECOND).

    `env` goes to both processes (e.g. a provider's key and base URL); `worker_env` overrides it for
    the worker. With `seed`, seeds the shipped model catalogue and presets first: a transactional test
    flushes the database, and the processes read both. Stop it with `app.stop()` (fixtures: yield it,
    then stop). Raises RuntimeError if daphne does not start (nothing is left running then).
    """
    from orchestration.catalogue import seed_catalogue
    from orchestration.presets import seed_presets

    if seed:
        seed_catalogue()
        seed_presets()
    shared = dict(env or {})
    # The worker first: it boots while daphne does, so it is taking tasks by the time the test starts one.
    worker_process = start_worker(**{**shared, **worker_env}) if worker else None
    try:
        web, url = start_web(**shared)
    except BaseException:
        # A worker left behind would take the next tests' runs from their own workers (lease_lost).
        if worker_process is not None:
            worker_process.stop()
        raise
    return LiveApp(url=url, web=web, worker=worker_process)


def preset_session(user, preset: str, *, project: str, title: str, brief: str, document: str = "", references=()):
    """A Pro-plan user's draft session from the shipped preset `preset` (a slug), with 100,000 credits.

    `references`: (title, text, filename) triples added through the service, as an upload would.
    Returns the WritingSession (status draft, not started).
    """
    from billing.plans import PRO
    from billing.services import get_account, grant_credits
    from orchestration import presets, services
    from orchestration.models import Project, TeamPreset, WritingSession

    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=100_000, key="test:credits", description="test credits")
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=user, name=project), title=title, brief=brief, document=document
    )
    presets.apply_preset(session=session, preset=TeamPreset.objects.get(owner=None, slug=preset))
    if references:
        services.add_references(session=session, user=user, items=list(references))
    return session


def assert_each_charge_once(user, session, *, balance_before: int) -> None:
    """The money after a crash: the session's turns were charged exactly what they used, once each.

    Checks: session.credits_used == sum of its turns' credits; the balance fell by exactly that; no
    ledger idempotency key repeats; the ledger sums to the balance.
    """
    from django.db.models import Sum

    from billing.models import CreditEntry
    from billing.services import get_balance
    from orchestration.models import Turn

    session.refresh_from_db()
    charged = sum(Turn.objects.filter(session=session).values_list("credits", flat=True))
    assert session.credits_used == charged
    assert get_balance(user) == balance_before - charged
    keys = list(CreditEntry.objects.filter(user=user).values_list("idempotency_key", flat=True))
    assert len(keys) == len(set(keys))
    assert CreditEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] == get_balance(user)
