"""What ``cw status``, ``cw task list`` and ``cw agent list`` show, as plain JSON-able data."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from cw import planspec
from cw.states import TaskState
from cw.store import Store

S = TaskState


def task_list(store: Store, state: str | None = None) -> list[dict[str, Any]]:
    rows = [_task(r) for r in store.task_rows()]
    return [r for r in rows if state is None or r["state"] == state]


def _task(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["state"] = str(row["state"].value)
    out["no_changes"] = bool(row["no_changes"])
    return out


def agent_list(store: Store) -> list[dict[str, Any]]:
    """Every agent; ``state`` is its latest attempt's (``unresponsive``: lease expired)."""
    now = time.time()
    agents = []
    for row in store.agent_rows():
        started, finished = row["started_at"], row["finished_at"]
        state = _agent_state(row, now)
        agents.append(
            {
                "name": row["name"],
                "task_id": row["task_id"],
                "task": row["task"],
                "state": state,
                "attempt": row["attempt"],
                "worktree": row["worktree"],
                "session_id": row["session_id"],
                "worker": row["worker"],
                "host": row["host"],
                "pid": row["pid"] if state == "running" else None,
                "runtime_seconds": round((finished or now) - started, 1) if started else None,
                "last_activity_at": row["last_activity_at"],
                "cost_usd": row["cost_usd"],
            }
        )
    return agents


def _agent_state(row: dict[str, Any], now: float) -> str:
    """running (lease live), unresponsive (lease expired), else what its task is waiting for."""
    if row["run_state"] == "running":
        lease = row["lease_expires_at"] or 0.0
        return "running" if lease >= now else "unresponsive"
    return str(row["task_state"].value)


def status(store: Store) -> dict[str, Any]:
    tasks = task_list(store)
    by_id = {t["id"]: t for t in tasks}
    waits_on: dict[int, list[str]] = defaultdict(list)
    for task_id, dep_id in store.dependency_pairs():
        if by_id[dep_id]["state"] != S.DONE:
            waits_on[task_id].append(by_id[dep_id]["key"])
    return {
        "counts": dict(Counter(t["state"] for t in tasks)),
        "total": len(tasks),
        "cost_usd": round(sum(t["cost_usd"] for t in tasks), 6),
        "costs": _costs(tasks),
        "budgets": store.budgets(),
        "plans": _plans(tasks),
        "running": [a for a in agent_list(store) if a["state"] in ("running", "unresponsive")],
        "blocked": [
            {"task": by_id[i]["key"], "state": by_id[i]["state"], "waits_on": keys}
            for i, keys in sorted(waits_on.items())
            if by_id[i]["state"] in (S.PENDING, S.BLOCKED)
        ],
        "attention": [
            {"task": t["key"], "state": t["state"], "error": t["last_error"]}
            for t in tasks
            if t["state"] in (S.FAILED, S.CONFLICT, S.WAITING, S.STOPPED)
        ],
        "messages_pending": len(store.message_rows(pending=True)),
        "no_changes": [t["key"] for t in tasks if t["no_changes"]],
    }


def _costs(tasks: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Cost rolled up: initiative, initiative/phase, initiative/phase/plan."""
    levels: dict[str, dict[str, float]] = {"initiative": {}, "phase": {}, "plan": {}}
    for t in tasks:
        for level, key in (
            ("initiative", t["initiative"]),
            ("phase", f"{t['initiative']}/{t['phase']}"),
            ("plan", f"{t['initiative']}/{t['phase']}/{t['plan']}"),
        ):
            levels[level][key] = round(levels[level].get(key, 0.0) + t["cost_usd"], 6)
    return levels


def _plans(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    plans: dict[tuple[str, str, str], Counter[str]] = {}
    costs: dict[tuple[str, str, str], float] = {}
    for t in tasks:
        key = (t["initiative"], t["phase"], t["plan"])
        plans.setdefault(key, Counter())[t["state"]] += 1
        costs[key] = round(costs.get(key, 0.0) + t["cost_usd"], 6)
    return [
        {
            "initiative": initiative,
            "phase": phase,
            "plan": plan,
            "done": counts.get(S.DONE, 0),
            "total": sum(counts.values()),
            "states": dict(counts),
            "cost_usd": costs[(initiative, phase, plan)],
        }
        for (initiative, phase, plan), counts in plans.items()
    ]


def progress(store: Store) -> tuple[int, int, int]:
    """(active, done, total). Nothing active means nothing moves until a person acts."""
    counts = Counter(t["state"] for t in task_list(store))
    active = sum(counts[s] for s in (S.READY, S.QUEUED, S.RUNNING, S.MERGING))
    return active, counts[S.DONE], sum(counts.values())


def verify_treatment(task: dict[str, Any]) -> str | None:
    """How a task's verify is used: the merge gate it runs, and what the agent is told."""
    return planspec.verify_treatment(
        (task.get("extra") or {}).get("verify_mode"), task.get("verify")
    )
