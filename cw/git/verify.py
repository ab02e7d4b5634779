"""Verified integration: the task's verify step and the project's, run on the merged tree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cw.host.processes import Launch, run_in_group
from cw.host.secrets import agent_env

#: How much of a failing check's output is kept in the database and shown to the agent.
OUTPUT_TAIL_CHARS = 8000


@dataclass(frozen=True)
class Verdict:
    ok: bool
    command: str  # the check that decided (the failing one, or all of them joined)
    exit_code: int | None
    output: str  # the tail of its stdout and stderr


def run_checks(
    commands: list[str], cwd: Path, timeout: float, log: Path, marks: Mapping[str, str]
) -> Verdict:
    """Run each command with ``/bin/sh -c`` in ``cwd``; stop at the first that fails.
    ``marks``: variables its processes carry, by which a check whose worker died is found."""
    for command in commands:
        verdict = _run(command, cwd, timeout, log, marks)
        if not verdict.ok:
            return verdict
    return Verdict(True, " && ".join(commands), 0, "")


def _run(command: str, cwd: Path, timeout: float, log: Path, marks: Mapping[str, str]) -> Verdict:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {command}\n", encoding="utf-8")
    finished = run_in_group(
        Launch(
            argv=["/bin/sh", "-c", command],
            cwd=cwd,
            env=agent_env(os.environ, marks),
            stdin_text="",
            stdout=log,
            stderr=log,
            timeout=timeout,
            grace=5.0,
            tick_seconds=timeout,
        ),
        lambda _pid: True,
    )
    output = log.read_text(encoding="utf-8", errors="replace")[-OUTPUT_TAIL_CHARS:]
    if finished.timed_out:
        return Verdict(False, command, None, output + f"\n(timed out after {timeout:.0f} s)")
    return Verdict(finished.exit_code == 0, command, finished.exit_code, output)
