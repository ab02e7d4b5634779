"""Which agent run a process works for, read from the environment it started with.

Every agent process cw starts, and everything it starts in turn, carries
``CW_AGENT_RUN=<.cw directory>#<task id>#<attempt>``: an agent whose worker died before
recording its process group is still found, by the district that started it and no other.
"""

from __future__ import annotations

from pathlib import Path

from cw.host import processes

AGENT_RUN_ENV = "CW_AGENT_RUN"


def run_marker(state_dir: Path, task_id: int, attempt: int) -> str:
    """The ``CW_AGENT_RUN`` of an attempt's agent of the district in ``state_dir``."""
    return f"{state_dir}#{task_id}#{attempt}"


def agent_runs(state_dir: Path) -> dict[int, tuple[int, int]]:
    """This district's agent process groups on this host, each with its (task id, attempt)."""
    prefix = f"{state_dir}#"
    runs = {}
    for pgid, value in processes.marked_groups(AGENT_RUN_ENV):
        task, _, attempt = value.removeprefix(prefix).partition("#")
        if value.startswith(prefix) and task.isdigit() and attempt.isdigit():
            runs[pgid] = (int(task), int(attempt))
    return runs


def agent_groups(state_dir: Path, task_id: int, attempts: range) -> set[int]:
    """The process groups on this host of agents this district started for ``task_id`` in
    one of ``attempts``, whether or not any worker recorded them."""
    return {
        pgid
        for pgid, (task, attempt) in agent_runs(state_dir).items()
        if task == task_id and attempt in attempts
    }
