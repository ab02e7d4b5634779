"""The merge path under load: how long finished work waits for its merge while agents run.

    .venv/bin/python bench/load.py [TASKS] [ROUNDS]   # prints JSON (about 3 minutes a round)

A DAG of TASKS tasks (default 500; each waits for up to two of the 30 tasks before it), agents
of 0.3 s (the command agent of bench/district.py), three agent workers of four slots and one
merge worker on one machine. Each round runs the same plan twice on fresh repositories, in a
rotating order: with the agent workers at the merge worker's CPU priority (``agent_nice = 0``)
and at the default ``agent_nice``. Reported per setting, from the database: the merge wait of
each task (queued for its merge to merged: p50, p95, max), the deepest the merge queue got, and
the makespan (submission to the last merge) against its lower bound (the critical path, or the
work divided by the slots, whichever is longer). ``make bench`` runs one plan at the default
``agent_nice`` (``row_load``).
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from bench.district import (  # noqa: E402
    Task,
    lower_bound,
    make_district,
    percentile,
    run_plan,
    settings_of,
    workers,
)
from bench.table import Row, Sizes  # noqa: E402
from cw import defaults  # noqa: E402
from cw.transport.broker import embedded_pid  # noqa: E402

AGENT_SECONDS = 0.3
AGENT_WORKERS = (4, 4, 4)
SETTINGS = {"agent_nice_0": 0, "agent_nice_default": defaults.AGENT_NICE}
TICKS = os.sysconf("SC_CLK_TCK")


def dag(n: int, seed: int = 5) -> list[Task]:
    rng = random.Random(seed)
    tasks: list[Task] = []
    for i in range(n):
        earlier = list(range(max(0, i - 30), i))
        deps = sorted(rng.sample(earlier, min(len(earlier), rng.randint(0, 2))))
        tasks.append(
            {"id": f"t{i:04d}", "prompt": f"task {i}", "depends_on": [f"t{d:04d}" for d in deps]}
        )
    return tasks


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(
    root: Path,
    name: str,
    nice: int,
    tasks: list[Task],
    agent_workers: Sequence[int] = AGENT_WORKERS,
    seconds: float = AGENT_SECONDS,
    config: dict[str, object] | None = None,
    worktrees_in: Path | None = None,
) -> dict[str, float]:
    """One run of ``tasks``; ``config`` adds settings to the district's config.toml;
    ``worktrees_in``: the tasks' worktrees there (``.cw/worktrees`` a symlink to a folder)."""
    durations = {str(t["id"]): seconds for t in tasks}
    repo = make_district(root, name, durations)
    if worktrees_in is not None:
        (worktrees_in / name).mkdir(parents=True)
        worktrees = repo / defaults.STATE_DIR / defaults.WORKTREE_DIR
        shutil.rmtree(worktrees, ignore_errors=True)
        worktrees.symlink_to(worktrees_in / name)
    with open(repo / ".cw" / "config.toml", "a") as toml:
        for key, value in {"agent_nice": nice, **(config or {})}.items():
            toml.write(f"{key} = {_toml(value)}\n")
    cw_before = children_cpu()
    with workers(repo, agent_workers):
        broker = embedded_pid(settings_of(repo))
        broker_before = cpu_seconds(broker)
        span, _wall = run_plan(repo, tasks, name)
        broker_cpu = cpu_seconds(broker) - broker_before
    cw_cpu = children_cpu() - cw_before
    with sqlite3.connect(repo / ".cw" / "cw.db") as db:
        rows = db.execute(
            "SELECT queued_at, finished_at FROM merges WHERE state = 'merged'"
        ).fetchall()
        (merged_tasks,) = db.execute(
            "SELECT count(DISTINCT task_id) FROM merges WHERE state = 'merged'"
        ).fetchone()
        (done,) = db.execute("SELECT count(*) FROM tasks WHERE state = 'done'").fetchone()
    waits = sorted(finished - queued for queued, finished in rows)
    bound = lower_bound(tasks, durations, sum(agent_workers))
    return {
        "tasks": len(tasks),
        "done": done,
        "merged": len(rows),
        "merged_tasks": merged_tasks,
        "merge_wait_p50_s": round(statistics.median(waits), 3),
        "merge_wait_p95_s": round(percentile(waits, 0.95), 3),
        "merge_wait_max_s": round(waits[-1], 3),
        "merge_queue_max": _deepest(rows),
        "makespan_s": round(span, 2),
        "lower_bound_s": round(bound, 2),
        "makespan_ratio": round(span / bound, 2),
        "broker_cpu_s": round(broker_cpu, 1),
        "cw_processes_cpu_s": round(cw_cpu, 1),
    }


def _toml(value: object) -> str:
    """A config value as TOML: a table inline (``{ command = 4 }``), anything else as JSON."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _deepest(rows: list[tuple[float, float]]) -> int:
    """The most merges queued and not yet finished at one time."""
    points = sorted([(q, 1) for q, _ in rows] + [(f, -1) for _, f in rows])
    depth = deepest = 0
    for _at, step in points:
        depth += step
        deepest = max(deepest, depth)
    return deepest


def row_load(root: Path, sizes: Sizes) -> list[Row]:
    r = one_run(root, "load", defaults.AGENT_NICE, dag(sizes.load_tasks))
    p95, queue, slots = r["merge_wait_p95_s"], int(r["merge_queue_max"]), sum(AGENT_WORKERS)
    return [
        Row(
            f"merge wait under load, {sizes.load_tasks} tasks, {slots} slots, agents of "
            f"{AGENT_SECONDS} s",
            f"p95 {p95:.2f} s, queue max {queue}",
            "—",
            None,
            f"p95 ≤ 2 s, queue ≤ {2 * slots}",
            p95 <= 2 and queue <= 2 * slots,
            dict(r),
        )
    ]


#: What an A/B of settings reports per setting (the median of its runs).
AB_KEYS = ("makespan_s", "merge_wait_p95_s", "merge_queue_max", "cw_processes_cpu_s")


def taking_turns(
    settings: Mapping[str, dict[str, object]],
    tasks: int,
    rounds: int,
    slots: Sequence[int] = AGENT_WORKERS,
) -> None:
    """:func:`one_run` once per setting (config.toml values, by name) per round, in a rotating
    order, each on a fresh district; prints one JSON line per run, then the medians."""
    names = list(settings)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="cwb-ab-") as tmp:
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                district = f"{name.replace('=', '-')}-{r}"
                result = one_run(
                    Path(tmp),
                    district,
                    defaults.AGENT_NICE,
                    dag(tasks),
                    slots,
                    config=settings[name],
                )
                runs[name].append(result)
                print(json.dumps({"round": r, "setting": name, **result}), flush=True)
    medians = {
        name: {key: statistics.median(r[key] for r in rs) for key in AB_KEYS}
        for name, rs in runs.items()
    }
    print(json.dumps(medians, indent=2))


def main(n: int, rounds: int) -> None:
    taking_turns({name: {"agent_nice": nice} for name, nice in SETTINGS.items()}, n, rounds)


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 500,
        int(sys.argv[2]) if len(sys.argv) > 2 else 1,
    )
