"""`manage.py up` keeps the app up: a dead worker is restarted and the web server keeps serving;
stopping is bounded even when a process hangs (issue 8, case 15). Real processes, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import BASE_DIR, free_port, is_atelier_health, subprocess_env, wait_for

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def live_members(pgid: int) -> list[int]:
    """Processes of a process group that still exist (zombies waiting for a reaper do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_up_restarts_a_killed_worker_keeps_serving_and_stops_a_hung_one_within_the_timeout(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    # Its own var dir: its own embedded Redis (when embedded), which `up` shuts down when it stops.
    env = subprocess_env(ATELIER_VAR_DIR=str(tmp_path))
    with open(log_path, "w") as log:
        up = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port), "--shutdown-timeout", "3"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    text = log_path.read_text
    try:
        first = int(wait_for(lambda: re.search(r"worker started \(pid (\d+)\)", text()), timeout=60).group(1))
        wait_for(lambda: is_atelier_health(url), timeout=60, interval=0.2, message="the web server")

        os.killpg(first, signal.SIGKILL)  # the worker and everything it forked die at once
        restarted = wait_for(lambda: re.search(r"worker restarted \(pid (\d+)\)", text()), timeout=30)
        assert "worker exited with code -9; restarting it in 1 s." in text()
        assert up.poll() is None and is_atelier_health(url)  # the web server was never taken down
        second = int(restarted.group(1))
        assert second != first and live_members(second)

        os.killpg(second, signal.SIGSTOP)  # a worker that hangs and will not stop on SIGTERM
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)  # bounded: 3 s for SIGTERM, then SIGKILL
        assert "worker did not stop within 3 s; killing it." in text()
        assert "Stopped." in text()
        assert not live_members(second) and not live_members(up.pid)
        assert not is_atelier_health(url)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
