"""Tables for people (rich); ``--json`` output bypasses this module."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

PIPE_WIDTH = 200
STATE_STYLE = {
    "done": "green",
    "running": "cyan",
    "merging": "cyan",
    "queued": "blue",
    "ready": "blue",
    "failed": "red",
    "conflict": "red",
    "blocked": "red",
    "waiting": "yellow",
    "unresponsive": "red",
    "stopped": "yellow",
}


DETAIL_FIELDS = (
    ("state", "state"),
    ("plan", "plan"),
    ("kind", "kind"),
    ("attempt", "attempt"),
    ("agent", "agent"),
    ("session", "session_id"),
    ("branch", "branch"),
    ("worktree", "worktree"),
    ("base", "base_sha"),
    ("merged", "merged_sha"),
    ("verify", "verify_treatment"),
    ("error", "last_error"),
)


def _console() -> Console:
    # Piped output (logs, CI) gets room for full paths instead of rich's 80-column default.
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def _state(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def worktree(path: str | None) -> str:
    """A worktree's path, and whether it is gone (removed after a merge, a stop or `cw gc`)."""
    if not path:
        return "-"
    return path if Path(path).exists() else f"{path} (removed)"


def _ago(at: float | None) -> str:
    if not at:
        return "-"
    seconds = max(0, int(time.time() - at))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def status(data: dict[str, Any]) -> None:
    console = _console()
    counts = ", ".join(f"{_state(k)} {v}" for k, v in sorted(data["counts"].items()))
    console.print(f"[bold]{data['total']} tasks[/]: {counts or 'none'}")
    console.print(f"cost so far: ${data['cost_usd']:.2f}")
    plans = Table(title="Plans", title_justify="left")
    for column in ("initiative", "phase", "plan", "progress", "cost", "states"):
        plans.add_column(column)
    for p in data["plans"]:
        states = ", ".join(f"{_state(k)} {v}" for k, v in sorted(p["states"].items()))
        progress = f"{p['done']}/{p['total']}"
        cost = f"${p['cost_usd']:.2f}"
        plans.add_row(p["initiative"], p["phase"], p["plan"], progress, cost, states)
    console.print(plans)
    for b in data["budgets"]:
        if b["exhausted"]:
            console.print(
                f"[red]budget spent:[/] {b['kind']} {b['name']} (${b['spent_usd']:.2f} of "
                f"${b['budget_usd']:.2f}): no new work starts there; raise it with cw budget set"
            )
    if data["running"]:
        agent_table(data["running"], title="Running agents", console=console)
    if data["blocked"]:
        blocked = Table(title="Waiting on dependencies", title_justify="left")
        for column in ("task", "state", "waits on"):
            blocked.add_column(column)
        for b in data["blocked"][:50]:
            blocked.add_row(b["task"], _state(b["state"]), ", ".join(b["waits_on"]))
        console.print(blocked)
    _needs_you(data, console)


def _needs_you(data: dict[str, Any], console: Console) -> None:
    if data["no_changes"]:
        keys = ", ".join(data["no_changes"][:20])
        console.print(f"done with no changes (their agents committed nothing): {keys}")
    for a in data["attention"]:
        console.print(
            f"[bold]needs you:[/] {a['task']} is {_state(a['state'])}: {a['error'] or ''}"
        )
    if data["messages_pending"]:
        console.print(
            f"[bold]messages:[/] {data['messages_pending']} pending: `cw message list --pending`, "
            "then `cw message answer ID TEXT`"
        )


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def _task_state(task: dict[str, Any]) -> str:
    return _state(task["state"]) + (" (no changes)" if task.get("no_changes") else "")


def task_table(rows: list[dict[str, Any]]) -> None:
    """One row a task; an initiative column once there are several (keys repeat across them)."""
    several = len({r["initiative"] for r in rows}) > 1
    columns = ("id", *(("initiative",) if several else ()), "key", "name", "plan", "state")
    _table(
        (*columns, "attempt", "agent"),
        [
            (
                str(r["id"]),
                *((r["initiative"],) if several else ()),
                r["key"],
                r["name"],
                r["plan"],
                _task_state(r),
                str(r["attempt"]),
                r["agent"] or "-",
            )
            for r in rows
        ],
    )


def agent_table(
    rows: list[dict[str, Any]], title: str | None = None, console: Console | None = None
) -> None:
    table = Table(title=title, title_justify="left")
    for column in (
        "name",
        "task",
        "state",
        "attempt",
        "runtime",
        "last activity",
        "cost",
        "worktree",
        "session",
    ):
        table.add_column(column)
    for r in rows:
        runtime = r["runtime_seconds"]
        table.add_row(
            r["name"],
            r["task"],
            _state(r["state"]),
            str(r["attempt"] or "-"),
            "-" if runtime is None else f"{runtime:.1f}s",
            _ago(r["last_activity_at"]),
            f"${r['cost_usd']:.2f}",
            worktree(r["worktree"]),
            r["session_id"] or "-",
        )
    (console or _console()).print(table)


def task_detail(d: dict[str, Any]) -> None:
    console = _console()
    console.print(f"[bold]{d['key']}[/] (id {d['id']}): {d['name']}")
    if d.get("no_changes"):
        console.print("  no changes: its agent committed nothing; the check passed without them")
    for label, key in DETAIL_FIELDS:
        value = worktree(d[key]) if key == "worktree" and d.get(key) else d.get(key)
        if value not in (None, "", []):
            console.print(f"  {label:<9} {getattr(value, 'value', value)}")
    console.print(f"  {'needs':<9} {', '.join(d['depends_on']) or '-'}")
    console.print(f"  {'needed by':<9} {', '.join(d['dependents']) or '-'}")
    if d["conflict_files"]:
        console.print(f"  {'conflicts':<9} {', '.join(d['conflict_files'])}")
    console.print("  prompt:")
    console.print("    " + (d["prompt"] or "").strip().replace("\n", "\n    "), markup=False)
    for run in d["runs"]:
        console.print(
            f"  attempt {run['attempt']}: {run['state']} on {run['worker'] or '?'}"
            f" exit={run['exit_code']} {run['error'] or ''}",
            markup=False,
        )
    for merge in d["merges"]:
        files = ", ".join(merge["conflict_files"])
        console.print(
            f"  merge {merge['attempt']}: {merge['state']} {merge['result_sha'] or ''} {files}",
            markup=False,
        )
        if merge["verify_command"]:
            console.print(
                f"    verify `{merge['verify_command']}` exited {merge['verify_exit_code']}",
                markup=False,
            )
            if merge["verify_exit_code"] != 0 and merge["verify_output"]:
                tail = merge["verify_output"].strip().splitlines()[-10:]
                console.print("      " + "\n      ".join(tail), markup=False)


def message_table(rows: list[dict[str, Any]]) -> None:
    _table(
        ("id", "task", "from", "state", "question", "options", "answer"),
        [(str(r["id"]), r["task"], r["agent"] or r["author"], _state(r["state"]),
          escape(_first_line(r["body"])), escape(", ".join(r["options"]) or "-"),
          escape(_first_line(r["answer"] or "-"))) for r in rows],
    )  # fmt: skip


def message_detail(m: dict[str, Any]) -> None:
    console = _console()
    who = f"agent {m['agent']}" if m["agent"] else m["author"]
    console.print(f"[bold]message {m['id']}[/] from {who} on task {m['task']} "
                  f"({m['task_name']}, {_state(m['task_state'])})")  # fmt: skip
    console.print(f"  state     {_state(m['state'])}  asked {_ago(m['created_at'])}")
    console.print("  " + m["body"].strip().replace("\n", "\n  "), markup=False)
    if m["options"]:
        many = " (several: separate them with commas)" if m["multi_select"] else ""
        console.print(f"  options{many}:")
        for option in m["options"]:
            console.print(f"    - {option}", markup=False)
    if m["answer"] is not None:
        console.print(f"  answer ({_ago(m['answered_at'])}): {m['answer']}", markup=False)
    else:
        console.print(f"  answer it: cw message answer {m['id']} TEXT")


def _first_line(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
