"""Every agent an adapter launches is marked with its district, task and attempt."""

from __future__ import annotations

from pathlib import Path

from cw.agents.protocol import AgentRequest, launch
from cw.host.runmarks import AGENT_RUN_ENV, run_marker
from cw.settings import Settings
from cw.store import TaskBrief


def test_an_agent_launch_carries_its_run_marker(tmp_path: Path) -> None:
    settings = Settings(repo=tmp_path)
    brief = TaskBrief(key="t", name="t", prompt="do it")
    request = AgentRequest(7, brief, 2, "a", "p", worktree=tmp_path, log_dir=tmp_path)
    for env in (None, {"PATH": "/bin"}):
        marker = launch(settings, request, ["true"], stdin_text="", env=env).env[AGENT_RUN_ENV]
        assert marker == run_marker(settings.state_dir, settings.hostname, 7, 2)
