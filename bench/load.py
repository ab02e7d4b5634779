"""The merge path under load: how long finished work waits for its merge while agents run.

    .venv/bin/python bench/load.py [TASKS] [ROUNDS]   # prints JSON (about 3 minutes a round)

A DAG of TASKS tasks (default 500; each waits for up to two of the 30 tasks before it), agents
of 0.3 s (the command agent of bench/run.py), three agent workers of four slots and one merge
worker on one machine. Each round runs the same plan twice on fresh repositories, in a
rotating order: with the agent workers at the merge worker's CPU priority (``agent_nice = 0``)
and at the default ``agent_nice``. Reported per setting, from the database: the merge wait of
each task (queued for its merge to merged: p50, p95, max), the deepest the merge queue got, and
the makespan (submission to the last merge) against its lower bound (the critical path, or the
work divided by the slots, whichever is longer).
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.run import make_district, run_plan, workers  # noqa: E402
from cw import defaults  # noqa: E402

AGENT_SECONDS = 0.3
AGENT_WORKERS = [4, 4, 4]
SETTINGS = {"agent_nice_0": 0, "agent_nice_default": defaults.AGENT_NICE}


def dag(n: int, seed: int = 5) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tasks: list[dict[str, object]] = []
    for i in range(n):
        earlier = list(range(max(0, i - 30), i))
        deps = sorted(rng.sample(earlier, min(len(earlier), rng.randint(0, 2))))
        tasks.append(
            {"id": f"t{i:03d}", "prompt": f"task {i}", "depends_on": [f"t{d:03d}" for d in deps]}
        )
    return tasks


def lower_bound(tasks: list[dict[str, object]]) -> float:
    depth: dict[str, int] = {}
    for task in tasks:  # listed after what they wait for
        deps = [str(d) for d in task["depends_on"]]  # type: ignore[attr-defined]
        depth[str(task["id"])] = 1 + max((depth[d] for d in deps), default=0)
    slots = sum(AGENT_WORKERS)
    return AGENT_SECONDS * max(max(depth.values()), len(tasks) / slots)


def one_run(root: Path, name: str, nice: int, tasks: list[dict[str, object]]) -> dict[str, float]:
    repo = make_district(root, name, {str(t["id"]): AGENT_SECONDS for t in tasks})
    with open(repo / ".cw" / "config.toml", "a") as config:
        config.write(f"agent_nice = {nice}\n")
    with workers(repo, AGENT_WORKERS):
        span, _wall = run_plan(repo, tasks, name)
    with sqlite3.connect(repo / ".cw" / "cw.db") as db:
        rows = db.execute(
            "SELECT queued_at, finished_at FROM merges WHERE state = 'merged'"
        ).fetchall()
    waits = sorted(done - queued for queued, done in rows)
    return {
        "merged": len(rows),
        "merge_wait_p50_s": round(statistics.median(waits), 3),
        "merge_wait_p95_s": round(waits[int(0.95 * (len(waits) - 1))], 3),
        "merge_wait_max_s": round(waits[-1], 3),
        "merge_queue_max": _deepest(rows),
        "makespan_s": round(span, 2),
        "makespan_ratio": round(span / lower_bound(tasks), 2),
    }


def _deepest(rows: list[tuple[float, float]]) -> int:
    """The most merges queued and not yet finished at one time."""
    points = sorted([(q, 1) for q, _ in rows] + [(f, -1) for _, f in rows])
    depth = deepest = 0
    for _at, step in points:
        depth += step
        deepest = max(deepest, depth)
    return deepest


def main(n: int, rounds: int) -> None:
    tasks = dag(n)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    with tempfile.TemporaryDirectory(prefix="cwb-load-") as tmp:
        for r in range(rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                result = one_run(Path(tmp), f"{name}-{r}", SETTINGS[name], tasks)
                runs[name].append(result)
                print(json.dumps({"round": r, "setting": name, **result}), file=sys.stderr)
    summary = {
        "tasks": n,
        "lower_bound_s": round(lower_bound(tasks), 2),
        **{
            name: {
                "runs": rs,
                **{
                    f"{key}_median": statistics.median(r[key] for r in rs)
                    for key in ("merge_wait_p95_s", "merge_queue_max", "makespan_ratio")
                },
            }
            for name, rs in runs.items()
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 500,
        int(sys.argv[2]) if len(sys.argv) > 2 else 1,
    )
