"""cw's overhead per task with instant agents, beside a plain Celery chain and a shell loop.

One district, one ``cw worker -c 2`` and the merge worker; N tasks in a chain (each waits for
the previous merge), then N independent ones. The agent writes one file and exits. Per task,
from the database's own times: submission to the last merge, divided by N. Baselines in the
same run: a raw Celery chain of two no-ops on the same Redis (``bench/rawcelery.py``), and a
shell loop doing, per task, ``git worktree add``, the same agent, a commit, ``git merge``.
The chain, the Celery chain and the shell loop run in three interleaved rounds; the row
compares their medians (one shell loop alone ranged from 24 to 69 ms per task on one machine).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from bench import rawcelery
from bench.district import (
    AGENT,
    ENV,
    Task,
    make_district,
    percentile,
    run_plan,
    settings_of,
    sh,
    tree_cpu,
    workers,
)
from bench.table import Row, Sizes
from cw.store import Store
from cw.transport.celeryapp import make_app

SHELL_LOOP = """\
set -e
for key in $KEYS; do
  git worktree add -q -b "loop/$key" "$WORKTREES/$key"
  (cd "$WORKTREES/$key" && CW_TASK_KEY=$key sh "$AGENT" && git add -A && git commit -q -m "$key")
  git merge -q --no-ff --no-edit "loop/$key"
done
"""


def shell_loop(root: Path, keys: list[str]) -> float:
    """Seconds for the loop over ``keys`` in a fresh repository (each task after the last)."""
    repo = root / "shell-loop"
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "first")
    (root / "shell-loop.sh").write_text(AGENT)
    (root / "shell-loop.durations").write_text("".join(f"{k} 0\n" for k in keys))
    env = ENV | {
        "KEYS": " ".join(keys),
        "WORKTREES": str(root / "shell-loop-wt"),
        "AGENT": str(root / "shell-loop.sh"),
        "BENCH_DURATIONS": str(root / "shell-loop.durations"),
    }
    start = time.monotonic()
    subprocess.run(["sh", "-c", SHELL_LOOP], cwd=repo, env=env, check=True)
    return time.monotonic() - start


def agent_start(repo: Path, initiatives: list[str]) -> dict[str, float]:
    """Claim -> agent running, agent exit -> merge queued (ms, median and p90), from events."""
    store = Store.open(settings_of(repo).db_url)
    ours = {t["id"] for t in store.task_rows() if t["initiative"] in initiatives}
    times: dict[object, dict[str, float]] = {}
    for e in store.events():
        if e["task_id"] in ours:
            times.setdefault(e["task_id"], {})[e["kind"]] = e["at"]
    store.close()
    start = [1000 * (t["agent.started"] - t["task.queued"]) for t in times.values()]
    finish = [1000 * (t["task.merging"] - t["agent.exited"]) for t in times.values()]
    return {
        "claim_to_agent_running_ms": round(statistics.median(start), 1),
        "claim_to_agent_running_p90_ms": round(percentile(start, 0.9), 1),
        "agent_exit_to_merge_queued_ms": round(statistics.median(finish), 1),
        "agent_exit_to_merge_queued_p90_ms": round(percentile(finish, 0.9), 1),
    }


ROUNDS = 3


def chain_of(n: int, prefix: str) -> list[Task]:
    return [
        {
            "id": f"{prefix}{i:02d}",
            "prompt": "x",
            "depends_on": [f"{prefix}{i - 1:02d}"] if i else [],
        }
        for i in range(n)
    ]


def bench_overhead(root: Path, n: int) -> dict[str, object]:
    chains = [chain_of(n, f"s{r}-") for r in range(ROUNDS)]
    wide: list[Task] = [{"id": f"w{i:02d}", "prompt": "x"} for i in range(n)]
    tasks = [t for chain in chains for t in chain] + wide
    repo = make_district(root, "overhead", {str(t["id"]): 0.0 for t in tasks})
    serial, serial_wall, raw_serial, raw_parallel, loop, cpu = [], [], [], [], [], []
    with workers(repo, [2]) as procs:
        url = make_app(settings_of(repo)).conf.broker_url
        for r, chain in enumerate(chains):
            before = tree_cpu(procs)
            span, wall = run_plan(repo, chain, f"serial-{r}")
            cpu.append(1000 * (tree_cpu(procs) - before) / n)
            serial.append(1000 * span / n)
            serial_wall.append(1000 * wall / n)
            raw = rawcelery.measure(url, n)
            raw_serial.append(1000 * raw[0] / n)
            raw_parallel.append(1000 * raw[1] / n)
            loop.append(1000 * shell_loop(root / f"round-{r}", [f"l{i:02d}" for i in range(n)]) / n)
        parallel, parallel_wall = run_plan(repo, wide, "parallel")
    return {
        "tasks": n,
        "rounds": ROUNDS,
        "cw_serial_ms_per_task": round(statistics.median(serial), 1),
        "cw_serial_ms_per_task_rounds": [round(x, 1) for x in serial],
        "cw_parallel_ms_per_task": round(1000 * parallel / n, 1),
        "cw_serial_wall_ms_per_task": round(statistics.median(serial_wall), 1),
        # CPU of the workers and what they ran (git, the agents), not the CLI: steadier than
        # the wall clock on a noisy machine
        "cw_serial_cpu_ms_per_task": round(statistics.median(cpu), 1),
        "cw_serial_cpu_ms_per_task_rounds": [round(x, 1) for x in cpu],
        "cw_parallel_wall_ms_per_task": round(1000 * parallel_wall / n, 1),
        "raw_chain_serial_ms": round(statistics.median(raw_serial), 1),
        "raw_chain_parallel_ms": round(statistics.median(raw_parallel), 1),
        "shell_loop_ms_per_task": round(statistics.median(loop), 1),
        "shell_loop_ms_per_task_rounds": [round(x, 1) for x in loop],
        "agent_start": agent_start(repo, [f"serial-{r}" for r in range(ROUNDS)]),
    }


def row_overhead(root: Path, sizes: Sizes) -> list[Row]:
    r = bench_overhead(root, sizes.overhead_tasks)
    cw = float(str(r["cw_serial_ms_per_task"]))
    raw = float(str(r["raw_chain_serial_ms"]))
    loop = float(str(r["shell_loop_ms_per_task"]))
    figure = f"cw overhead per task, a chain of {sizes.overhead_tasks} instant agents"
    return [
        Row(
            figure,
            f"{cw:.1f} ms",
            f"plain Celery chain of two no-ops: {raw:.1f} ms",
            cw / raw,
            "≤ 2.5x",
            cw / raw <= 2.5,
            r,
        ),
        Row(
            figure,
            f"{cw:.1f} ms",
            f"shell loop `git worktree add; agent; git commit; git merge`: {loop:.1f} ms",
            cw / loop,
            "≤ 1.5x",
            cw / loop <= 1.5,
        ),
    ]
