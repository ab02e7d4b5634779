"""Tables for people (rich); ``--json`` output bypasses this module."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cw.store.read import (
    AgentView,
    AttemptRecord,
    MergeRecord,
    MessageDetail,
    MessageListing,
    Status,
    TaskDetail,
    TaskListing,
    short_count,
)
from cw.store.records import Tokens, check_ended

if TYPE_CHECKING:  # rich is imported when a table is drawn: ``--json`` output needs none of it
    from rich.console import Console
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
    "review": "bold magenta",
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

AGENT_COLUMNS = (
    "name",
    "task",
    "state",
    "attempt",
    "runtime",
    "last activity",
    "cost",
    "tokens",
    "host",
    "worktree",
    "session",
)


def _console() -> Console:
    from rich.console import Console

    # Piped output (logs, CI) gets room for full paths instead of rich's 80-column default.
    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def _new_table(**options: Any) -> Table:
    from rich.table import Table

    return Table(**options)


def _state(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


def worktree(path: str | None, host: str | None = None, here: str = "") -> str:
    """A worktree's path, and whether it is gone (removed after a merge, a stop or `cw gc`);
    one on another host (``host`` is not ``here``) is named with its host, not looked for."""
    if not path:
        return "-"
    if host and here and host != here:
        return f"{path} (on {host})"
    return path if Path(path).exists() else f"{path} (removed)"


def _last_host(d: TaskDetail) -> str | None:
    """The host of a task's latest attempt: where its current worktree is."""
    runs = sorted(d.runs, key=lambda run: run.attempt)
    return runs[-1].host if runs else None


def _ago(at: float | None) -> str:
    if not at:
        return "-"
    seconds = max(0, int(time.time() - at))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def status(data: Status, here: str = "") -> None:
    console = _console()
    counts = ", ".join(f"{_state(k)} {v}" for k, v in sorted(data.counts.items()))
    console.print(f"[bold]{data.total} tasks[/]: {counts or 'none'}")
    console.print(f"cost so far: ${data.cost_usd:.2f}, {short_count(data.tokens)} tokens")
    if data.counts.get("review"):
        waiting = data.counts["review"]
        console.print(f"[bold]{waiting} task(s) wait for your review[/]: cw review list")
    plans = _new_table(title="Plans", title_justify="left")
    for column in ("initiative", "phase", "plan", "progress", "cost", "tokens", "states"):
        plans.add_column(column)
    for p in data.plans:
        states = ", ".join(f"{_state(k)} {v}" for k, v in sorted(p.states.items()))
        progress = f"{p.done}/{p.total}"
        cost, tokens = f"${p.cost_usd:.2f}", short_count(p.tokens)
        plans.add_row(p.initiative, p.phase, p.plan, progress, cost, tokens, states)
    console.print(plans)
    for b in data.budgets:
        if b.exhausted:
            console.print(
                f"[red]budget spent:[/] {b.describe()}: no new work starts there; "
                "raise it with cw budget set"
            )
    if data.running:
        agent_table(data.running, title="Running agents", console=console, here=here)
    if data.blocked:
        blocked = _new_table(title="Waiting on dependencies", title_justify="left")
        for column in ("task", "state", "waits on"):
            blocked.add_column(column)
        for w in data.blocked[:50]:
            blocked.add_row(w.task, _state(w.state), ", ".join(w.waits_on))
        console.print(blocked)
    _needs_you(data, console)


#: A task queued this long with no agent running at all says no agent worker may be up.
QUEUED_ALONE_SECONDS = 60.0

#: What a person does about a task in one of these states.
_NEXT_STEP = {
    "waiting": "its agent asked something: `cw message list --pending`",
    "stopped": "`cw agent resume` continues it",
    "review": "`cw review show` it, then approve or reject",
    "conflict": "`cw task retry` sends it back to its agent, `cw task cancel` gives it up",
    "failed": "`cw task retry` tries again, `cw task cancel` gives it up",
}


def _needs_you(data: Status, console: Console) -> None:
    for pause in data.paused:
        console.print(f"[bold yellow]paused:[/] {pause.describe()}")
    waited = time.time() - data.queued_since if data.queued_since is not None else 0.0
    if waited > QUEUED_ALONE_SECONDS and not data.running and not data.paused:
        queued = data.counts.get("queued", 0)
        console.print(
            f"[bold yellow]nothing runs:[/] {queued} task(s) sent to the workers, the first "
            f"{waited:.0f} s ago, and no agent runs: is an agent worker up? "
            "(`cw worker`, or `cw server`)"
        )
    if data.no_changes:
        keys = ", ".join(data.no_changes[:20])
        console.print(f"done with no changes (their agents committed nothing): {keys}")
    for a in data.attention:
        why = "; ".join(part for part in (a.error, _NEXT_STEP.get(a.state)) if part)
        console.print(
            f"[bold]needs you:[/] {a.task} is {_state(a.state)}" + (f": {why}" if why else "")
        )
    if data.messages_pending:
        console.print(
            f"[bold]messages:[/] {data.messages_pending} pending: `cw message list --pending`, "
            "then `cw message answer ID TEXT`"
        )


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = _new_table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def task_table(rows: list[TaskListing]) -> None:
    """One row a task; an initiative column once there are several (keys repeat across them)."""
    several = len({r.initiative for r in rows}) > 1
    columns = ("id", *(("initiative",) if several else ()), "key", "name", "plan", "state")
    _table(
        (*columns, "attempt", "agent"),
        [
            (
                str(r.id),
                *((r.initiative,) if several else ()),
                r.key,
                r.name,
                r.plan,
                _state(r.state) + (" (no changes)" if r.no_changes else ""),
                str(r.attempt),
                r.agent or "-",
            )
            for r in rows
        ],
    )


def agent_table(
    rows: list[AgentView],
    title: str | None = None,
    console: Console | None = None,
    here: str = "",
) -> None:
    """``here``: this host's name; worktrees of other hosts are not looked for on this disk."""
    table = _new_table(title=title, title_justify="left")
    for column in AGENT_COLUMNS:
        table.add_column(column)
    for r in rows:
        runtime = r.runtime_seconds
        table.add_row(
            r.name,
            r.task,
            _state(r.state),
            str(r.attempt or "-"),
            "-" if runtime is None else f"{runtime:.1f}s",
            _ago(r.last_activity_at),
            f"${r.cost_usd:.2f}",
            short_count(r.tokens),
            r.host or "-",
            worktree(r.worktree, r.host, here),
            r.session_id or "-",
        )
    (console or _console()).print(table)


def task_detail(d: TaskDetail, here: str = "") -> None:
    console = _console()
    console.print(f"[bold]{d.key}[/] (id {d.id}): {d.name}")
    if d.no_changes:
        console.print("  no changes: its agent committed nothing; the check passed without them")
    for label, key in DETAIL_FIELDS:
        value = (
            worktree(d.worktree, _last_host(d), here)
            if key == "worktree" and d.worktree
            else getattr(d, key)
        )
        if value not in (None, "", []):
            console.print(f"  {label:<9} {getattr(value, 'value', value)}")
    console.print(f"  {'needs':<9} {', '.join(d.depends_on) or '-'}")
    console.print(f"  {'needed by':<9} {', '.join(d.dependents) or '-'}")
    if d.conflict_files:
        console.print(f"  {'conflicts':<9} {', '.join(d.conflict_files)}")
    console.print("  prompt:")
    console.print("    " + (d.prompt or "").strip().replace("\n", "\n    "), markup=False)
    for run in d.runs:
        console.print(
            f"  attempt {run.attempt}: {run.state} on {run.worker or '?'}"
            f" (host {run.host or '?'}, {run.worktree or 'no worktree'})"
            f" exit={run.exit_code} {run.error or ''}",
            markup=False,
        )
        if run.cost_usd or run.tokens:
            console.print(f"    spent {_spent(run)}", markup=False)
    for merge in d.merges:
        _merge_lines(console, merge)


def _spent(run: AttemptRecord) -> str:
    """A run's cost and tokens, the tokens by kind."""
    t = Tokens.of(run.usage)
    kinds = (("input", t.input), ("output", t.output), ("cache read", t.cache_read),
             ("cache write", t.cache_write))  # fmt: skip
    parts = ", ".join(f"{name} {short_count(n)}" for name, n in kinds if n)
    return (
        f"${run.cost_usd or 0:.2f}, {short_count(run.tokens)} tokens ({parts or 'none reported'})"
    )


def _merge_lines(console: Console, merge: MergeRecord) -> None:
    files = ", ".join(merge.conflict_files)
    console.print(
        f"  merge {merge.attempt}: {merge.state} {merge.result_sha or ''} {files}", markup=False
    )
    if merge.verify_command:
        console.print(
            f"    verify `{merge.verify_command}` {check_ended(merge.verify_exit_code)}",
            markup=False,
        )
        if merge.verify_exit_code != 0 and merge.verify_output:
            tail = merge.verify_output.strip().splitlines()[-10:]
            console.print("      " + "\n      ".join(tail), markup=False)


def message_table(rows: list[MessageListing]) -> None:
    from rich import markup

    _table(
        ("id", "task", "from", "state", "question", "options", "answer"),
        [
            (
                str(r.id),
                r.task,
                r.agent or r.author,
                _state(r.state),
                markup.escape(_first_line(r.body)),
                markup.escape(", ".join(r.options) or "-"),
                markup.escape(_first_line(r.answer or "-")),
            )
            for r in rows
        ],
    )


def message_detail(m: MessageDetail) -> None:
    console = _console()
    who = f"agent {m.agent}" if m.agent and m.author == "agent" else m.author
    console.print(
        f"[bold]message {m.id}[/] from {who} on task {m.task} "
        f"({m.task_name}, {_state(m.task_state)})"
    )
    console.print(f"  state     {_state(m.state)}  asked {_ago(m.created_at)}")
    console.print("  " + m.body.strip().replace("\n", "\n  "), markup=False)
    if m.options:
        many = " (several: separate them with commas)" if m.multi_select else ""
        console.print(f"  options{many}, by number, id or text:")
        for number, option in enumerate(m.options, 1):
            console.print(f"    {number}. {option}", markup=False)
    if m.answer is not None:
        console.print(f"  answer ({_ago(m.answered_at)}): {m.answer}", markup=False)
    else:
        console.print(f"  answer it: cw message answer {m.id} TEXT")


def _first_line(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
