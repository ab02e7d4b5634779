"""What the makespan row's DAGs would take with no overhead at all: the scheduling floor.

    .venv/bin/python bench/schedule.py          # prints the table (instant: a simulation)

Each DAG of bench/makespan.py is scheduled on its 4 agent slots with every task taking exactly
its agent's duration and nothing in between (no git, no database, no broker), the ratio to the
same critical-path lower bound as the row's. Tasks that become ready together are sent in
cw's dispatch order (the longest chain of tasks it unlocks first, then the plan's order), and
a free slot takes:

- ``cw``: the first waiting message of the most urgent Redis priority list, as cw's agent
  messages are sent (``queue_priority`` in cw/transport/dispatch.py);
- ``one list``: the first message sent (first in, first out): cw before message priorities;
- ``exact``: the first waiting task in dispatch order, as if every waiting task were ordered;
- ``clairvoyant``: the longest chain by the agents' durations, which no scheduler knows in
  advance.

The lower bound is not reachable in general: list scheduling without the durations leaves
gaps. The row's measured ratio over this floor is cw's own overhead.
"""

from __future__ import annotations

import heapq
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.district import Task, lower_bound
from bench.makespan import SLOTS, random_dag
from cw.store.records import Claim
from cw.transport.dispatch import queue_priority

Order = Callable[[str], tuple[float, int]]


def simulate(
    tasks: list[Task], durations: dict[str, float], order: Order, take: Order | None
) -> float:
    """The makespan of ``tasks`` on SLOTS slots: tasks that became ready together are sent in
    ``order``, and a free slot takes the waiting task first by ``take`` (then first sent;
    None: first sent)."""
    children = _children(tasks)
    waiting = {str(t["id"]): len(_deps(t)) for t in tasks}
    queue = sorted((k for k, n in waiting.items() if n == 0), key=order)
    running: list[tuple[float, str]] = []
    now, free, done = 0.0, SLOTS, 0
    while done < len(tasks):
        if take is not None:
            queue.sort(key=take)  # stable: first sent first among equals
        while free and queue:
            key = queue.pop(0)
            free -= 1
            heapq.heappush(running, (now + durations[key], key))
        now, key = heapq.heappop(running)
        free, done = free + 1, done + 1
        ready = [c for c in children[key] if _one_less(waiting, c)]
        queue += sorted(ready, key=order)
    return now


def _deps(task: Task) -> list[str]:
    deps = task.get("depends_on") or []
    assert isinstance(deps, list)
    return [str(d) for d in deps]


def _children(tasks: list[Task]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {str(t["id"]): [] for t in tasks}
    for t in tasks:
        for dep in _deps(t):
            children[dep].append(str(t["id"]))
    return children


def _one_less(waiting: dict[str, int], key: str) -> bool:
    waiting[key] -= 1
    return waiting[key] == 0


def heights(tasks: list[Task], weight: Callable[[str], float]) -> dict[str, float]:
    """Each task's longest chain to the end of the DAG, itself included, by ``weight``."""
    children = _children(tasks)
    height: dict[str, float] = {}
    for t in reversed(tasks):  # every task comes after the tasks it depends on
        key = str(t["id"])
        height[key] = weight(key) + max((height[c] for c in children[key]), default=0)
    return height


def floors(dags: int, n: int, scale: float) -> dict[str, list[float]]:
    """Each way's ratio to the lower bound, DAG by DAG."""
    ratios: dict[str, list[float]] = {}
    for seed in range(dags):
        for way, ratio in _ratios(*random_dag(seed, n, scale)).items():
            ratios.setdefault(way, []).append(ratio)
    return ratios


def _ratios(tasks: list[Task], durations: dict[str, float]) -> dict[str, float]:
    bound = lower_bound(tasks, durations, SLOTS)
    place = {str(t["id"]): i for i, t in enumerate(tasks)}
    count = heights(tasks, lambda _key: 1)
    length = heights(tasks, lambda key: durations[key])

    def by_count(key: str) -> tuple[float, int]:
        return -count[key], place[key]

    def by_list(key: str) -> tuple[float, int]:
        return queue_priority(Claim(0, 1, height=int(count[key]))), 0

    def by_length(key: str) -> tuple[float, int]:
        return -length[key], place[key]

    return {
        "cw": simulate(tasks, durations, by_count, by_list) / bound,
        "one list": simulate(tasks, durations, by_count, None) / bound,
        "exact": simulate(tasks, durations, by_count, by_count) / bound,
        "clairvoyant": simulate(tasks, durations, by_length, by_length) / bound,
    }


def summary(ratios: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        order: {"median": round(statistics.median(r), 3), "max": round(max(r), 3)}
        for order, r in ratios.items()
    }


if __name__ == "__main__":
    for order, figures in summary(floors(20, 30, 1.0)).items():
        print(f"{order:12} median {figures['median']:.3f}  max {figures['max']:.3f}")
