"""One object per process: made on first use, and made afresh in a forked child.

django-q2 forks its worker processes from a parent that may already hold such an object. Only the forking
thread survives a fork, so the child's copy would point at threads that are gone (the engine's database
threads, the session host's loop, the mail thread) or at sockets it shares with its parent (a Redis pool).
Kept with the process id that made it, the object is made again when another process asks for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """`factory()`'s object for the calling process, made once per process (thread-safe).

    `key`: what else the object was made from (compared by identity, e.g. a settings dict that a test may
    replace): another key makes it afresh too. The old object is dropped, not closed: in a forked child it
    belongs to the parent.
    """

    def __init__(self, factory: Callable[[], T], *, key: Callable[[], object] = lambda: None) -> None:
        self._factory = factory
        self._key = key
        self._made: tuple[int, object, T] | None = None  # (pid, key, object)
        self._lock = threading.Lock()

    def get(self) -> T:
        """This process's object, made now if it has none yet."""
        made, key = self._made, self._key()
        if made is not None and made[0] == os.getpid() and made[1] is key:
            return made[2]
        with self._lock:
            made = self._made
            if made is None or made[0] != os.getpid() or made[1] is not key:
                made = self._made = (os.getpid(), key, self._factory())
            return made[2]

    def current(self) -> T | None:
        """This process's object if it has made one, else None (nothing is made)."""
        made = self._made
        return made[2] if made is not None and made[0] == os.getpid() else None

    def forget(self) -> None:
        """Drop this process's object (tests: the next get() makes one with the settings as they are then)."""
        with self._lock:
            self._made = None
