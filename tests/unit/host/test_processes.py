"""Process groups as cw sees them: a dead but unreaped group is not alive."""

from __future__ import annotations

import subprocess
import time

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
