"""The command adapter with real processes: environment, stdin, logs, timeouts, group kills."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from cw.agents.command import CommandAdapter
from cw.agents.protocol import AgentRequest
from cw.agents.registry import make_adapter
from cw.errors import ConfigError
from cw.settings import Settings
from cw.store import TaskBrief


def adapter(tmp_path: Path, command: str, **overrides: str) -> CommandAdapter:
    env = {"CW_REPO": str(tmp_path), "CW_AGENT_COMMAND": command, "CW_HEARTBEAT": "0.1"}
    settings = Settings.load(env=env | {f"CW_{k.upper()}": v for k, v in overrides.items()})
    made = make_adapter(settings)
    assert isinstance(made, CommandAdapter)
    return made


def request(tmp_path: Path) -> AgentRequest:
    worktree = tmp_path / "wt"
    worktree.mkdir(exist_ok=True)
    return AgentRequest(
        task_id=7, attempt=2,
        task=TaskBrief("02-01-1", "Cache", "Write an LRU cache", decisions=["Store: lite"]),
        agent_name="amber-otter", prompt="The whole brief",
        worktree=worktree, log_dir=tmp_path / "logs",
    )  # fmt: skip


def always(_pid: int) -> bool:
    return True


def test_the_program_gets_the_task_in_its_environment_and_on_stdin(tmp_path: Path) -> None:
    script = (
        "env | grep ^CW_ | sort > seen.env; cat > seen.stdin; pwd > seen.cwd; "
        "echo out; echo err >&2"
    )
    outcome = adapter(tmp_path, script).run(request(tmp_path), always, lambda _s: None)
    assert outcome.ok and outcome.exit_code == 0
    seen = (tmp_path / "wt" / "seen.env").read_text()
    for line in ("CW_TASK_ID=7", "CW_TASK_KEY=02-01-1", "CW_TASK_NAME=Cache", "CW_ATTEMPT=2",
                 "CW_AGENT_NAME=amber-otter", "CW_TASK_PROMPT=Write an LRU cache",
                 f"CW_WORKTREE={tmp_path / 'wt'}", 'CW_DECISIONS=["Store: lite"]'):  # fmt: skip
        assert line in seen
    assert (tmp_path / "wt" / "seen.stdin").read_text() == "Write an LRU cache"
    assert (tmp_path / "wt" / "seen.cwd").read_text().strip() == str(tmp_path / "wt")
    assert Path(outcome.stdout_path or "").read_text() == "out\n"
    assert Path(outcome.stderr_path or "").read_text() == "err\n"
    assert outcome.stdout_path == str(tmp_path / "logs" / "attempt-2.stdout")


def test_a_failing_program_reports_its_exit_code_and_last_error_line(tmp_path: Path) -> None:
    outcome = adapter(tmp_path, "echo first >&2; echo 'disk full' >&2; exit 4").run(
        request(tmp_path), always, lambda _s: None
    )
    assert outcome.status == "failed" and outcome.exit_code == 4
    assert outcome.error is not None and outcome.error.startswith("exit code 4: disk full")


def _survivors(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = f"sleep 3{os.getpid() % 1000}.5"
    start = time.monotonic()
    outcome = adapter(
        tmp_path, f"{marker} & {marker}", agent_timeout="1", agent_kill_grace="1"
    ).run(request(tmp_path), always, lambda _s: None)
    assert outcome.status == "failed" and "timed out" in (outcome.error or "")
    assert time.monotonic() - start < 10
    assert _survivors(marker) == []


def test_a_tick_that_says_stop_ends_the_agent(tmp_path: Path) -> None:
    ticks: list[int] = []

    def lost_lease(pid: int) -> bool:
        ticks.append(pid)
        return len(ticks) < 3

    outcome = adapter(tmp_path, "sleep 30").run(request(tmp_path), lost_lease, lambda _s: None)
    assert outcome.status == "failed" and outcome.stopped
    assert len(set(ticks)) == 1, "every tick names the agent's process group"


def test_command_adapter_needs_a_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CW_AGENT_COMMAND"):
        adapter(tmp_path, " ")


def test_unknown_adapter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CW_AGENT: expected one of claude, codex, command"):
        adapter(tmp_path, "true", agent="nope")
