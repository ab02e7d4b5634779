"""Agent processes found by the run marker they started with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cw.host import processes
from cw.host.runmarks import AGENT_RUN_ENV, MarkedRun, agent_groups, agent_runs, run_marker
from cw.host.secrets import agent_env


def seen(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    """Whether ``predicate`` holds within ``timeout`` s (a child shows its environment once
    it has exec'd its program)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_agent_runs_are_those_of_this_district_whatever_their_host(tmp_path: Path) -> None:
    here, there = tmp_path / "here" / ".cw", tmp_path / "there" / ".cw"
    started = {
        (state_dir, host, task, attempt): subprocess.Popen(
            ["sleep", "30"],
            env={
                "PATH": os.environ["PATH"],
                AGENT_RUN_ENV: run_marker(state_dir, host, task, attempt),
            },
            start_new_session=True,
        )
        for state_dir, host, task, attempt in [
            (here, "a", 5, 1),
            (here, "b#2", 5, 2),
            (here, "a", 50, 1),
            (there, "a", 5, 1),
        ]
    }
    try:
        pid = {(key[0], key[2], key[3]): proc.pid for key, proc in started.items()}
        expected = {
            pid[here, 5, 1]: MarkedRun("a", 5, 1),
            pid[here, 5, 2]: MarkedRun("b#2", 5, 2),
            pid[here, 50, 1]: MarkedRun("a", 50, 1),
        }
        assert seen(lambda: agent_runs(here) == expected), agent_runs(here)
        runs = agent_runs(here)
        assert agent_groups(runs, 5, range(1, 3)) == {pid[here, 5, 1], pid[here, 5, 2]}
        assert agent_groups(runs, 5, range(2, 3)) == {pid[here, 5, 2]}
        assert agent_groups(runs, 6, range(1, 9)) == set()
        assert agent_groups(agent_runs(there), 5, range(1, 9)) == {pid[there, 5, 1]}
    finally:
        for proc in started.values():
            processes.kill_group(proc.pid)
            proc.wait()


def test_nothing_cw_starts_inherits_the_marker_of_the_agent_that_ran_it() -> None:
    """An agent's shell that runs `cw worker` starts no agent of its own task."""
    assert AGENT_RUN_ENV not in agent_env({AGENT_RUN_ENV: "x#h#1#1", "HOME": "/h"}, {})
    script = (
        "import os, sys\n"
        "from cw.cli import main\n"
        "sys.argv = ['cw', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"sys.stderr.write(repr(os.environ.get({AGENT_RUN_ENV!r})))\n"
    )
    env = {**os.environ, AGENT_RUN_ENV: "x#h#1#1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stderr == "None"
