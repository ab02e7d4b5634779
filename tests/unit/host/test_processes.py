"""Process groups as cw sees them: a dead but unreaped group is not alive."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cw.host import processes


def test_a_group_whose_only_process_is_an_unreaped_zombie_is_not_alive() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert processes.group_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # it dies; nobody calls wait(), so it stays a zombie
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed process never became a zombie"
            time.sleep(0.05)
        assert processes.group_alive(proc.pid) is False
    finally:
        proc.wait()
    assert processes.group_alive(proc.pid) is False, "reaped: the group is gone"


def test_terminating_a_group_does_not_wait_out_the_grace_for_a_zombie() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    started = time.monotonic()
    processes.terminate_group(proc.pid, grace=10)
    assert time.monotonic() - started < 5, "the SIGTERM was enough; the grace is not waited out"
    assert proc.wait(timeout=1) == -15


def test_an_agent_exit_is_noticed_at_once_not_at_the_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Popen.wait`` with a timeout sleeps in steps growing to 50 ms: a child of 0.12 s is
    noticed ~44 ms late that way. The run waits on the child's pidfd, which wakes when it
    exits: Popen's polling (the fallback without a pidfd) is never used here."""
    polled: list[float] = []
    monkeypatch.setattr(processes, "_waited", lambda _proc, seconds: polled.append(seconds))
    launch = processes.Launch(
        argv=["sleep", "0.12"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        stdin_text="",
        stdout=tmp_path / "out.log",
        stderr=tmp_path / "err.log",
        timeout=30,
        grace=1,
        tick_seconds=10,
    )
    finished = processes.run_in_group(launch, lambda _pid: True)
    assert (finished.exit_code, finished.timed_out, finished.stopped) == (0, False, False)
    assert polled == [], "it polled with Popen.wait"
    assert finished.seconds < 10, "woken by the exit, not by the tick"


def quick_launch(tmp_path: Path, argv: list[str], timeout: float, tick_seconds: float) -> Any:
    return processes.Launch(
        argv=argv,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        stdin_text="",
        stdout=tmp_path / "out.log",
        stderr=tmp_path / "err.log",
        timeout=timeout,
        grace=1,
        tick_seconds=tick_seconds,
    )


def test_an_endless_timeout_waits_for_the_exit(tmp_path: Path) -> None:
    """A timeout of inf (a verify or notify command without limit) is waited out in turns."""
    launch = quick_launch(tmp_path, ["sleep", "0.2"], float("inf"), float("inf"))
    finished = processes.run_in_group(launch, lambda _pid: True)
    assert (finished.exit_code, finished.timed_out) == (0, False)


def test_a_tick_that_raises_takes_the_group_with_it(tmp_path: Path) -> None:
    """A heartbeat that fails (the database is gone) must not leave the agent running."""
    groups: list[int] = []

    def tick(pid: int) -> bool:
        groups.append(pid)
        if len(groups) > 1:
            raise RuntimeError("the database went away")
        return True

    launch = quick_launch(tmp_path, ["sh", "-c", "sleep 30 & sleep 30"], 60, 0.1)
    with pytest.raises(RuntimeError, match="went away"):
        processes.run_in_group(launch, tick)
    assert processes.group_alive(groups[0]) is False


def test_groups_are_found_by_the_variable_their_processes_started_with() -> None:
    def start(value: str, *, own_session: bool = True) -> subprocess.Popen[bytes]:
        env = {"PATH": os.environ["PATH"], "MARK": value}
        argv = ["sh", "-c", "sleep 30 & wait"]  # the sleep, its child, inherits the variable
        return subprocess.Popen(argv, env=env, start_new_session=own_session)

    wanted, other, in_ours = start("wanted"), start("other"), start("wanted", own_session=False)
    try:
        expected = {(wanted.pid, "wanted"), (other.pid, "other")}  # never our own group
        deadline = time.monotonic() + 10  # until the shells have exec'd and started sleeping
        while processes.marked_groups("MARK") != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes.marked_groups("MARK") == expected
    finally:
        for proc in (wanted, other):
            processes.kill_group(proc.pid)
        in_ours.kill()
        for proc in (wanted, other, in_ours):
            proc.wait()
