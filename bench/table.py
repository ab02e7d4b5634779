"""The goals table of issue 18: one line per figure, its baseline from the same run, the goal."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is: the full run of ``make bench`` or ``--quick``."""

    label: str
    dags: int = 20  # random DAGs for the makespan
    dag_tasks: int = 30
    dag_seconds: float = 1.0  # agents sleep 1-4 x this
    overhead_tasks: int = 30
    merge_branches: int = 200
    merge_runs: int = 3
    submit_tasks: int = 5000
    submit_runs: int = 3
    listed_tasks: int = 10_000
    listed_agents: int = 1000
    command_runs: int = 5
    fsui_tasks: int = 10_000
    load_tasks: int = 500
    scale_tasks: int = 1000
    scale_agents: int = 32
    scale_seconds: float = 1.0


FULL = Sizes("full")
QUICK = Sizes(
    "quick",
    dags=3,
    dag_tasks=15,
    dag_seconds=0.25,
    overhead_tasks=10,
    merge_branches=40,
    merge_runs=1,
    submit_tasks=1000,
    submit_runs=1,
    listed_tasks=2000,
    listed_agents=200,
    command_runs=3,
    fsui_tasks=2000,
    load_tasks=100,
    scale_tasks=150,
)


@dataclass(frozen=True)
class Row:
    """One line of the table. ``passed`` None: not measured (``figure`` says why)."""

    figure: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    passed: bool | None
    detail: dict[str, object] = field(default_factory=dict)


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**FAIL**", None: "not measured"}[passed]


def markdown(rows: list[Row]) -> str:
    lines = [
        "| figure | measured | baseline (same run) | ratio | goal | pass |",
        "|---|---|---|---:|---|---|",
    ]
    for r in rows:
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        cells = (r.figure, r.measured, r.baseline, ratio, r.goal, verdict(r.passed))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def not_measured(figure: str, why: str, goal: str) -> Row:
    return Row(figure, f"not measured: {why}", "—", None, goal, None)
