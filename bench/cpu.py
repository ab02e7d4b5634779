"""Where the CPU of a loaded run goes: each process of a :func:`bench.load.one_run`, per task.

    .venv/bin/python bench/cpu.py [TASKS] [AGENTS] [SECONDS] [--worktrees-in DIR]

Runs a DAG of TASKS tasks (bench/load.py's), AGENTS command agents of SECONDS each in two
agent workers and one merge worker, and samples every process below this one from ``/proc``
every 0.1 s (psutil): its user and system time and those of the children it reaped (the git
and agent processes a pool process waited for; a pool process that exits shows again in its
worker's). Prints the run's row, then per kind of process its CPU per task.
``--worktrees-in DIR`` puts the tasks' worktrees under DIR (``.cw/worktrees`` a symlink; a
tmpfs shows what checking files out costs). docs/benchmarks.md, "A cap on agents in flight,
and where the CPU goes"."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

import psutil

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

import bench.load as load  # noqa: E402
from cw import defaults  # noqa: E402

#: (user, system, reaped children) CPU seconds of each process seen, by pid, with its kind.
Seen = dict[int, tuple[str, float, float, float]]


def kind_of(proc: psutil.Process) -> str:
    argv = " ".join(proc.cmdline())
    parent = proc.parent()
    above = " ".join(parent.cmdline()) if parent else ""
    if "redis-server" in argv:
        return "broker"
    if "-Q merge" in argv or "--merge" in argv:
        return "merge worker"
    if "-Q agents" in argv:
        return "agent pool process" if "-Q agents" in above else "agent worker (Celery main)"
    for word in ("wait", "submit", "worker", "broker", "init"):
        if f" cw {word}" in argv:
            return f"cw {word}"
    return "other: " + (proc.name() or "?")


def sample(seen: Seen, stop: threading.Event) -> None:
    me = psutil.Process()
    while not stop.wait(0.1):
        for proc in me.children(recursive=True):
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    kind = kind_of(proc)  # anew: `cw worker` execs Celery in its place
                    if kind.startswith("other") and proc.pid in seen:  # exiting: no argv left
                        kind = seen[proc.pid][0]
                    children = t.children_user + t.children_system
                    seen[proc.pid] = (kind, t.user, t.system, children)
            except psutil.Error:
                continue


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", type=int, nargs="?", default=200)
    parser.add_argument("agents", type=int, nargs="?", default=32)
    parser.add_argument("seconds", type=float, nargs="?", default=1.0)
    parser.add_argument("--worktrees-in", type=Path, default=None)
    args = parser.parse_args(argv)
    seen: Seen = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(seen, stop), daemon=True)
    sampler.start()
    half = args.agents // 2
    with tempfile.TemporaryDirectory(prefix="cwb-cpu-") as tmp:
        dag = load.dag(args.tasks)
        workers, where = (half, half), args.worktrees_in
        row = load.one_run(
            Path(tmp), "cpu", defaults.AGENT_NICE, dag, workers, args.seconds, worktrees_in=where
        )
    stop.set()
    sampler.join()
    print(json.dumps(row))
    totals: dict[str, list[float]] = {}
    for kind, user, system, children in seen.values():
        total = totals.setdefault(kind, [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate((user, system, children, 1.0)):
            total[i] += value
    ms = 1000 / args.tasks
    for kind, (user, system, children, count) in sorted(
        totals.items(), key=lambda kv: -sum(kv[1][:2])
    ):
        print(
            f"{kind:28s} {int(count):4d} process(es)  per task: user {user * ms:6.1f} ms, "
            f"system {system * ms:5.1f} ms, children it reaped {children * ms:6.1f} ms"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
