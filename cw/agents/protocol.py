"""What an agent adapter is: "run this prompt in this worktree, resuming this session" for one
agent CLI.

Every adapter implements :class:`AgentAdapter` and returns an :class:`AgentOutcome`; the rest
of cw never knows which program ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cw.errors import AgentError
from cw.host.processes import Finished, Launch, Tick, run_in_group
from cw.host.runmarks import AGENT_RUN_ENV, run_marker
from cw.host.secrets import agent_env
from cw.settings import Settings
from cw.store.records import RunFacts, TaskBrief


@dataclass(frozen=True)
class AgentRequest:
    task_id: int
    task: TaskBrief  # the task as cw describes it; task.prompt is its own text (the action)
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
        """``attempt-N.stdout`` / ``.stderr``: this attempt's raw output; ``attempt-N.NAME``:
        its other files (a command agent's questions and answers)."""
        return self.log_dir / f"attempt-{self.attempt}.{stream}"

    @property
    def events_path(self) -> Path:
        """``events.jsonl``: every event of every attempt, one JSON object per line."""
        return self.log_dir / "events.jsonl"


@dataclass(kw_only=True)
class AgentOutcome(RunFacts):
    """Normalised result of one run: ``done``, ``questions``, ``rate_limited`` or ``failed``."""

    status: str
    stopped: bool = False  # ended because the tick said stop (lease lost, stop requested)
    resets_at: float | None = None  # status rate_limited: when the usage limit resets

    @property
    def ok(self) -> bool:
        return self.status == "done"


class AgentAdapter(Protocol):
    """One agent CLI. ``run`` blocks until the agent exits, is stopped, or times out."""

    name: str

    def run(
        self, request: AgentRequest, tick: Tick, on_session: Callable[[str], None]
    ) -> AgentOutcome: ...


def last_line(path: Path) -> str:
    """The last line of a log file (read from its end), for one-line error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 2000))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return f"see {path}"
    return (lines[-1][:300] if lines else "no output") + f" (log: {path})"


def launch(
    settings: Settings,
    request: AgentRequest,
    argv: list[str],
    *,
    stdin_text: str,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    tick_seconds: float | None = None,
) -> Launch:
    """How an adapter runs its CLI: in the worktree, its output in the attempt's logs, under
    the district's timeout, kill grace and heartbeat. ``env``: the agent's whole environment
    (by default the worker's, less cw's secrets, plus the request's)."""
    run = (settings.state_dir, settings.hostname, request.task_id, request.attempt)
    marker = {AGENT_RUN_ENV: run_marker(*run)}
    whole = {**(agent_env(os.environ, request.env) if env is None else env), **marker}
    return Launch(
        argv=argv,
        cwd=request.worktree,
        env=_fitting(whole, request),
        stdin_text=stdin_text,
        stdout=request.log_path("stdout"),
        stderr=request.log_path("stderr"),
        timeout=settings.agent_timeout,
        grace=settings.agent_kill_grace,
        tick_seconds=settings.heartbeat if tick_seconds is None else tick_seconds,
        on_line=on_line,
    )


#: Linux refuses to start a program given one environment string over 128 KiB.
MAX_ENV_VALUE_BYTES = 100_000


def _fitting(env: dict[str, str], request: AgentRequest) -> dict[str, str]:
    """``env``, each value too long to pass (a pasted log as an answer, a long review comment)
    written beside the attempt's logs instead and named in the variable."""
    fitting = dict(env)
    for name, value in env.items():
        if len(value.encode("utf-8", "surrogateescape")) > MAX_ENV_VALUE_BYTES:
            path = request.log_path(f"{name}.txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value, encoding="utf-8", errors="surrogateescape")
            fitting[name] = f"(over {MAX_ENV_VALUE_BYTES // 1000} KB: the whole value is in {path})"
    return fitting


def run_agent(launch: Launch, tick: Tick) -> Finished:
    """:func:`run_in_group`; a program that cannot be started (gone in an upgrade, not
    executable, its worktree removed) is one line naming it, not an internal error."""
    try:
        return run_in_group(launch, tick)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise AgentError(f"cannot start {launch.argv[0]} in {launch.cwd}: {why}") from exc
