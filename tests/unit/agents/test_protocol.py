"""Every agent process is marked with its district, task and attempt, and found by it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cw.agents.protocol import AGENT_RUN_ENV, AgentRequest, agent_groups, launch, run_marker
from cw.host import processes
from cw.settings import Settings
from cw.store import TaskBrief


def test_an_agent_launch_carries_its_run_marker(tmp_path: Path) -> None:
    settings = Settings(repo=tmp_path)
    brief = TaskBrief(key="t", name="t", prompt="do it")
    request = AgentRequest(7, brief, 2, "a", "p", worktree=tmp_path, log_dir=tmp_path)
    for env in (None, {"PATH": "/bin"}):
        marker = launch(settings, request, ["true"], stdin_text="", env=env).env[AGENT_RUN_ENV]
        assert marker == run_marker(settings, 7, 2)


def test_agent_groups_are_those_of_the_task_and_attempts_asked_in_this_district(
    tmp_path: Path,
) -> None:
    here, there = Settings(repo=tmp_path / "here"), Settings(repo=tmp_path / "there")
    started = {
        (settings.repo.name, task, attempt): subprocess.Popen(
            ["sleep", "30"],
            env={"PATH": os.environ["PATH"], AGENT_RUN_ENV: run_marker(settings, task, attempt)},
            start_new_session=True,
        )
        for settings, task, attempt in [(here, 5, 1), (here, 5, 2), (here, 50, 1), (there, 5, 1)]
    }
    try:
        time.sleep(0.1)
        pid = {key: proc.pid for key, proc in started.items()}
        assert agent_groups(here, 5, range(1, 3)) == {pid["here", 5, 1], pid["here", 5, 2]}
        assert agent_groups(here, 5, range(2, 3)) == {pid["here", 5, 2]}
        assert agent_groups(there, 5, range(1, 9)) == {pid["there", 5, 1]}
        assert agent_groups(here, 6, range(1, 9)) == set()
    finally:
        for proc in started.values():
            processes.kill_group(proc.pid)
            proc.wait()
