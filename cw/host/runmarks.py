"""Which agent run a process works for, read from the environment it started with.

Every agent process cw starts, and everything it starts in turn, carries
``CW_AGENT_RUN=<.cw directory>#<host>#<task id>#<attempt>``: an agent whose worker died
before recording its process group is still found, by the district that started it and no
other. cw's own processes never pass the variable on (``cw`` drops it at its start, and an
agent's environment is built without it): a worker started from an agent's shell is no agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cw.defaults import AGENT_RUN_ENV
from cw.host import processes

__all__ = ["AGENT_RUN_ENV", "MarkedRun", "agent_groups", "agent_runs", "run_marker"]


@dataclass(frozen=True)
class MarkedRun:
    """The attempt a marked process was started for: its host's name in the district."""

    host: str
    task_id: int
    attempt: int


def run_marker(state_dir: Path, host: str, task_id: int, attempt: int) -> str:
    """The ``CW_AGENT_RUN`` of an attempt's agent of the district in ``state_dir``."""
    return f"{state_dir}#{host}#{task_id}#{attempt}"


def agent_runs(state_dir: Path) -> dict[int, MarkedRun]:
    """This district's agent process groups on this machine, each with its run."""
    prefix = f"{state_dir}#"
    runs = {}
    for pgid, value in processes.marked_groups(AGENT_RUN_ENV):
        parts = value.removeprefix(prefix).rsplit("#", 2)  # host, task id, attempt
        if (
            value.startswith(prefix)
            and len(parts) == 3
            and all(p.isascii() and p.isdigit() for p in parts[1:])
        ):
            runs[pgid] = MarkedRun(parts[0], int(parts[1]), int(parts[2]))
    return runs


def agent_groups(runs: Mapping[int, MarkedRun], task_id: int, attempts: range) -> set[int]:
    """The process groups of ``runs`` started for ``task_id`` in one of ``attempts``."""
    return {
        pgid for pgid, run in runs.items() if run.task_id == task_id and run.attempt in attempts
    }
