"""Makespan of random DAGs against the critical-path lower bound, 4 agent processes.

Each task's agent sleeps a known duration (1-4 s, seeded); each task waits for up to two
earlier ones. The DAGs run one after another in one district (two ``cw worker -c 2`` and a
merge worker); the makespan of each is the database's own span from its submission to its
last ``done`` event.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

from bench.district import Task, lower_bound, make_district, run_plan, workers
from bench.table import Row, Sizes

AGENT_WORKERS = (2, 2)
SLOTS = sum(AGENT_WORKERS)


def random_dag(seed: int, n: int, scale: float) -> tuple[list[Task], dict[str, float]]:
    """n tasks keyed ``d<seed>-tNN``, each after up to two earlier ones; their durations."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    durations: dict[str, float] = {}
    for i in range(n):
        key = f"d{seed}-t{i:02d}"
        earlier = rng.sample(range(i), min(i, rng.randint(0, 2)))
        durations[key] = round(scale * rng.uniform(1.0, 4.0), 2)
        deps = sorted(f"d{seed}-t{j:02d}" for j in earlier)
        tasks.append({"id": key, "prompt": "sleep", "depends_on": deps})
    return tasks, durations


def bench_makespan(root: Path, sizes: Sizes) -> dict[str, object]:
    dags = [random_dag(seed, sizes.dag_tasks, sizes.dag_seconds) for seed in range(sizes.dags)]
    every = {k: v for _, durations in dags for k, v in durations.items()}
    repo = make_district(root, "makespan", every)
    runs = []
    with workers(repo, AGENT_WORKERS):
        for seed, (tasks, durations) in enumerate(dags):
            measured, wall = run_plan(repo, tasks, f"makespan-{seed}")
            bound = lower_bound(tasks, durations, SLOTS)
            runs.append(
                {
                    "seed": seed,
                    "makespan_s": round(measured, 2),
                    "wall_s": round(wall, 2),
                    "bound_s": round(bound, 2),
                    "ratio": round(measured / bound, 3),
                }
            )
    ratios = [float(str(r["ratio"])) for r in runs]
    from bench.schedule import floors, summary  # it simulates these DAGs: imports this module

    return {
        "runs": runs,
        "median_ratio": round(statistics.median(ratios), 3),
        "max_ratio": round(max(ratios), 3),
        "no_overhead": summary(floors(sizes.dags, sizes.dag_tasks, sizes.dag_seconds)),
    }


def row_makespan(root: Path, sizes: Sizes) -> list[Row]:
    result = bench_makespan(root, sizes)
    median, worst = float(str(result["median_ratio"])), float(str(result["max_ratio"]))
    return [
        Row(
            f"makespan, {sizes.dags} random DAGs of {sizes.dag_tasks} tasks, {SLOTS} agents",
            f"ratio median {median:.3f}, max {worst:.3f}",
            "critical-path lower bound",
            median,
            "median ≤ 1.03, max ≤ 1.10",
            median <= 1.03 and worst <= 1.10,
            result,
        )
    ]
