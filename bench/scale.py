"""Many agents at once: N tasks, 32 concurrent command agents, one merge worker.

The DAG of bench/load.py (each task waits for up to two of the 30 before it), agents that
sleep 1 s, two ``cw worker -c 16`` and one merge worker at the default ``agent_nice``.
Reported: the makespan against its lower bound, whether every task was merged exactly once,
and the CPU seconds of the broker (the embedded ``redis-server``) and of cw's processes
(workers, agents, git, the CLI; with SQLite the database runs inside them).
"""

from __future__ import annotations

from pathlib import Path

from bench.load import dag, one_run
from bench.table import Row, Sizes
from cw import defaults


def row_scale(root: Path, sizes: Sizes) -> list[Row]:
    half = sizes.scale_agents // 2
    r = one_run(
        root, "scale", defaults.AGENT_NICE, dag(sizes.scale_tasks), (half, half),
        sizes.scale_seconds,
    )  # fmt: skip
    lost = int(r["tasks"]) - int(r["merged_tasks"])
    twice = int(r["merged"]) - int(r["merged_tasks"])
    ratio = float(r["makespan_ratio"])
    return [
        Row(
            f"{sizes.scale_tasks:,} tasks x {sizes.scale_agents} command agents of "
            f"{sizes.scale_seconds:g} s, one merge worker",
            f"makespan {r['makespan_s']:.1f} s; {lost} lost, {twice} merged twice; CPU: broker "
            f"{r['broker_cpu_s']} s, cw processes + SQLite {r['cw_processes_cpu_s']} s",
            f"makespan lower bound: {r['lower_bound_s']:.1f} s",
            ratio,
            "≤ 1.10x, no task lost",
            ratio <= 1.10 and lost == 0 and twice == 0,
            dict(r),
        )
    ]
