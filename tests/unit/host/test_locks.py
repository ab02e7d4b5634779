"""cw's file locks: a wait that may be ended, and who holds a lock, from another process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cw.host import locks

#: Holds the lock on argv[1] until its stdin closes; says "held" once it does.
HOLDER = """
import fcntl, sys
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


class GaveUp(Exception):
    pass


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A lock file and the process holding it."""
    path = tmp_path / "some.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield path, proc
    proc.kill()
    proc.communicate()


def test_a_wait_is_ended_by_its_waiting_callback_raising(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, _holder = held
    calls: list[int] = []

    def waiting() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise GaveUp

    with pytest.raises(GaveUp), locks.file_lock(path, waiting):
        pytest.fail("the lock was taken while another held it")
    assert len(calls) == 3


def test_a_free_lock_is_taken_without_waiting(tmp_path: Path) -> None:
    def waiting() -> None:
        raise AssertionError("nobody holds it")

    path = tmp_path / "free.lock"
    with locks.file_lock(path, waiting):
        assert str(locks.holder(path)).startswith(f"pid {os.getpid()} (")
    assert locks.holder(path) is None, "let go"


def test_the_holder_is_named_by_its_pid_and_command_line(
    held: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    path, holder = held
    said = locks.holder(path)
    assert said is not None and said.startswith(f"pid {holder.pid} ({sys.executable} -c")
    assert locks.holder(tmp_path / "missing.lock") is None
