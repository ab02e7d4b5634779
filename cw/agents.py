"""Agent adapters: "run this prompt in this worktree, resuming this session" for one agent CLI.

Every adapter implements :class:`AgentAdapter` and returns an :class:`AgentOutcome`; the rest
of cw never knows which program ran. ``command`` runs any program (scripts, codemods, other
CLIs); the Claude Code adapter plugs in beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cw.errors import ConfigError
from cw.processes import Launch, Tick, run_in_group
from cw.secrets import agent_env
from cw.settings import Settings


@dataclass(frozen=True)
class AgentRequest:
    task_id: int
    task_key: str
    task_name: str
    task_prompt: str  # the task's own text (the plan's action / prompt)
    attempt: int
    agent_name: str
    prompt: str  # the full brief cw wrote for an agent CLI (task, plan, rules)
    worktree: Path
    log_dir: Path
    session_id: str | None = None  # resume this conversation (it exists already)
    new_session_id: str | None = None  # else start a conversation with this id, if the CLI can
    new_session_known: bool = False  # an earlier run of this district launched new_session_id
    fresh_prompt: str = ""  # the prompt of a new conversation, if session_id is not on this host
    session_cost_usd: float = 0.0  # what cw has recorded for this session so far
    env: Mapping[str, str] = field(default_factory=dict)  # added to the agent's environment

    def log_path(self, stream: str) -> Path:
        """``attempt-N.stdout`` / ``attempt-N.stderr``: this attempt's raw output."""
        return self.log_dir / f"attempt-{self.attempt}.{stream}"

    @property
    def events_path(self) -> Path:
        """``events.jsonl``: every event of every attempt, one JSON object per line."""
        return self.log_dir / "events.jsonl"


@dataclass
class AgentOutcome:
    """Normalised result of one run: ``done``, ``questions``, ``rate_limited`` or ``failed``."""

    status: str
    exit_code: int | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    summary: str | None = None
    error: str | None = None
    questions: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)  # tokens, as the CLI reports them
    duration_ms: int | None = None
    stopped: bool = False  # ended because the tick said stop (lease lost, stop requested)
    resets_at: float | None = None  # status rate_limited: when the usage limit resets
    stdout_path: str | None = None
    stderr_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"


class AgentAdapter(Protocol):
    """One agent CLI. ``run`` blocks until the agent exits, is stopped, or times out."""

    name: str

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome: ...


class CommandAdapter:
    """Runs ``CW_AGENT_COMMAND`` with ``/bin/sh -c`` in the worktree.

    The program gets ``CW_TASK_ID``, ``CW_TASK_KEY``, ``CW_TASK_NAME``, ``CW_TASK_PROMPT`` (the
    task's own text), ``CW_WORKTREE``, ``CW_ATTEMPT`` and ``CW_AGENT_NAME``, and the task's text
    on stdin. Exit 0 is success; cw commits whatever it left in the worktree.
    """

    name = "command"

    def __init__(self, settings: Settings) -> None:
        if not settings.agent_command.strip():
            raise ConfigError("CW_AGENT=command needs CW_AGENT_COMMAND: the program to run")
        self.command = settings.agent_command
        self.timeout = settings.agent_timeout
        self.grace = settings.agent_kill_grace
        self.tick_seconds = settings.heartbeat

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome:
        stdout, stderr = request.log_path("stdout"), request.log_path("stderr")
        launch = Launch(
            argv=["/bin/sh", "-c", self.command],
            cwd=request.worktree,
            env=agent_env(os.environ, {**request.env, **_task_env(request)}),
            stdin_text=request.task_prompt,
            stdout=stdout,
            stderr=stderr,
            timeout=self.timeout,
            grace=self.grace,
            tick_seconds=self.tick_seconds,
        )
        finished = run_in_group(launch, tick)
        outcome = AgentOutcome(
            status="done",
            exit_code=finished.exit_code,
            stdout_path=str(stdout),
            stderr_path=str(stderr),
        )
        if finished.timed_out:
            outcome.status, outcome.error = "failed", f"timed out after {self.timeout:.0f} s"
        elif finished.stopped:
            outcome.status, outcome.error, outcome.stopped = "failed", "stopped", True
        elif finished.exit_code != 0:
            outcome.status = "failed"
            outcome.error = f"exit code {finished.exit_code}: {last_line(stderr)}"
        return outcome


def _task_env(request: AgentRequest) -> dict[str, str]:
    return {
        "CW_TASK_ID": str(request.task_id),
        "CW_TASK_KEY": request.task_key,
        "CW_TASK_NAME": request.task_name,
        "CW_TASK_PROMPT": request.task_prompt,
        "CW_WORKTREE": str(request.worktree),
        "CW_ATTEMPT": str(request.attempt),
        "CW_AGENT_NAME": request.agent_name,
    }


def last_line(path: Path) -> str:
    """The last line of a log file (read from its end), for one-line error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 2000))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return f"see {path}"
    return (lines[-1][:300] if lines else "no output") + f" (log: {path})"
