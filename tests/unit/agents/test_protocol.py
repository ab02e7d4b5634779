"""Every agent an adapter launches is marked with its district, task and attempt."""

from __future__ import annotations

from pathlib import Path

import pytest

from cw.agents.protocol import AgentRequest, launch, run_agent
from cw.errors import AgentError
from cw.host.processes import run_in_group
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


def test_a_value_too_long_for_the_environment_is_passed_in_a_file(tmp_path: Path) -> None:
    """Linux refuses to start a program given an environment string over 128 KiB: one pasted
    log as an answer failed every later attempt of its task."""
    settings = Settings(repo=tmp_path)
    brief = TaskBrief(key="t", name="t", prompt="do it")
    answers = '[{"answer": "' + "x" * 200_000 + '"}]'
    request = AgentRequest(
        7, brief, 2, "a", "p", worktree=tmp_path, log_dir=tmp_path / "logs",
        env={"CW_ANSWERS": answers, "CW_BOUNCE": "review"},
    )  # fmt: skip
    env = launch(settings, request, ["true"], stdin_text="").env
    path = tmp_path / "logs" / "attempt-2.CW_ANSWERS.txt"
    assert env["CW_ANSWERS"] == f"(over 100 KB: the whole value is in {path})"
    assert path.read_text() == answers and env["CW_BOUNCE"] == "review"
    finished = run_in_group(
        launch(settings, request, ["sh", "-c", 'test -n "$CW_ANSWERS"'], stdin_text=""),
        lambda _pid: True,
    )
    assert finished.exit_code == 0, "the agent starts"


def test_a_program_that_cannot_be_started_is_one_line_naming_it(tmp_path: Path) -> None:
    """Gone in an upgrade between the worker's check and the launch: the task failed with
    "internal error: FileNotFoundError(2, ...)", naming nothing."""
    settings = Settings(repo=tmp_path)
    request = AgentRequest(7, TaskBrief("t", "t", "p"), 2, "a", "p", worktree=tmp_path,
                           log_dir=tmp_path / "logs")  # fmt: skip
    gone = launch(settings, request, [str(tmp_path / "claude")], stdin_text="")
    with pytest.raises(AgentError, match=f"cannot start {tmp_path / 'claude'} in {tmp_path}: "):
        run_agent(gone, lambda _pid: True)
