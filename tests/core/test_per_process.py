"""atelier.core.per_process: one object per process, made afresh in a forked child (the engine's database
threads, the session host, the mail thread and the unsaved-tails cache client are kept this way)."""

from __future__ import annotations

import itertools
import os
import threading

import pytest

from atelier.core.per_process import PerProcess


def test_every_caller_in_a_process_gets_the_one_object_made_once_even_when_they_race():
    made = itertools.count(1)
    gate = threading.Barrier(8)
    kept = PerProcess(lambda: {"n": next(made)})
    seen = []

    def ask():
        gate.wait()
        seen.append(kept.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [item["n"] for item in seen] == [1] * 8
    assert kept.get() is seen[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_its_own_and_the_parent_keeps_its_own():
    made = itertools.count(1)
    kept = PerProcess(lambda: next(made))
    assert kept.get() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's object is not its own
        try:
            os.write(write, f"{kept.current()},{kept.get()},{kept.get()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    reply = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert reply == "None,2,2"  # nothing until asked; then one made (the counter was copied at 2)
    assert kept.get() == 1


def test_another_key_makes_it_afresh_and_current_never_makes_one():
    config = {"BACKEND": "a"}
    kept = PerProcess(lambda: dict(config), key=lambda: config)
    assert kept.current() is None
    first = kept.get()
    assert kept.current() is first and kept.get() is first
    config = {"BACKEND": "b"}  # a test replaced the setting
    assert kept.get() == {"BACKEND": "b"}
    kept.forget()
    assert kept.current() is None
