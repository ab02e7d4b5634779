"""Process groups as cw sees them: a dead but unreaped group is not alive."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from cw.host import processes


def test_a_group_whose_only_process_is_an_unreaped_zombie_is_not_alive() -> None:
    proc = subprocess.Popen(["sleep", "0.1"], start_new_session=True)
    try:
        assert processes.group_alive(proc.pid)
        time.sleep(0.5)  # it exits; nobody calls wait(), so it stays a zombie
        assert processes.group_alive(proc.pid) is False
    finally:
        proc.wait()
    assert processes.group_alive(proc.pid) is False, "reaped: the group is gone"


def test_terminating_a_group_does_not_wait_out_the_grace_for_a_zombie() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    started = time.monotonic()
    processes.terminate_group(proc.pid, grace=10)
    assert time.monotonic() - started < 2, "the SIGTERM was enough; the zombie is not waited on"
    assert proc.wait(timeout=1) == -15


def test_an_agent_exit_is_noticed_at_once_not_at_the_next_poll(tmp_path: Path) -> None:
    """``Popen.wait`` with a timeout sleeps in steps growing to 50 ms: a child of 0.12 s is
    noticed ~44 ms late that way. The run notices the exit when it happens (median of five)."""
    late = []
    for n in range(5):
        launch = processes.Launch(
            argv=["sleep", "0.12"],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            stdin_text="",
            stdout=tmp_path / f"out-{n}.log",
            stderr=tmp_path / f"err-{n}.log",
            timeout=30,
            grace=1,
            tick_seconds=10,
        )
        finished = processes.run_in_group(launch, lambda _pid: True)
        assert (finished.exit_code, finished.timed_out, finished.stopped) == (0, False, False)
        late.append(finished.seconds - 0.12)
    assert statistics.median(late) < 0.03, f"noticed late by {late} s"
