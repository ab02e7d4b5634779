"""Agent processes found by the run marker they started with."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cw.host import processes
from cw.host.runmarks import AGENT_RUN_ENV, agent_groups, agent_runs, run_marker


def test_agent_groups_are_those_of_the_task_and_attempts_asked_in_this_district(
    tmp_path: Path,
) -> None:
    here, there = tmp_path / "here" / ".cw", tmp_path / "there" / ".cw"
    started = {
        (state_dir, task, attempt): subprocess.Popen(
            ["sleep", "30"],
            env={"PATH": os.environ["PATH"], AGENT_RUN_ENV: run_marker(state_dir, task, attempt)},
            start_new_session=True,
        )
        for state_dir, task, attempt in [(here, 5, 1), (here, 5, 2), (here, 50, 1), (there, 5, 1)]
    }
    try:
        time.sleep(0.1)
        pid = {key: proc.pid for key, proc in started.items()}
        assert agent_groups(here, 5, range(1, 3)) == {pid[here, 5, 1], pid[here, 5, 2]}
        assert agent_groups(here, 5, range(2, 3)) == {pid[here, 5, 2]}
        assert agent_groups(there, 5, range(1, 9)) == {pid[there, 5, 1]}
        assert agent_groups(here, 6, range(1, 9)) == set()
        runs = {pid[here, 5, 1]: (5, 1), pid[here, 5, 2]: (5, 2), pid[here, 50, 1]: (50, 1)}
        assert agent_runs(here) == runs
    finally:
        for proc in started.values():
            processes.kill_group(proc.pid)
            proc.wait()
