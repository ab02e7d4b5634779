"""Tables for people (rich); ``--json`` output bypasses this module."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
    from rich.text import Text

#: Piped output (logs, CI, grep) is never cut or wrapped: one row a line, however wide.
PIPE_WIDTH = 1 << 16
#: Rows of `cw status`'s "Waiting on dependencies"; `cw task list` has them all.
BLOCKED_ROWS = 50
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
    # a plan's state (cw.store.read.plan_state) beside the tasks' own
    "failing": "red",
    "needs you": "yellow",
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

AGENT_COLUMNS = ("name", "task", "state", "attempt", "runtime", "last activity", "cost", "tokens",
                 "host", "worktree", "session")  # fmt: skip
#: The agent table's columns a narrow terminal leaves out, the least needed first.
AGENT_DROPS = ("session", "last activity", "tokens", "attempt", "host", "cost", "worktree")
#: A worktree's path is cut to about this in a narrow terminal before its column is left out.
CUT_PATH_WIDTH = 24


def _console() -> Console:
    """Stored text is printed as it is: a ``str`` goes with ``markup=False`` or as a
    :class:`~rich.text.Text`, and ``:name:`` is never an emoji."""
    from rich.console import Console

    width = None if sys.stdout.isatty() else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, emoji=False, width=width)


def _grid(
    columns: Sequence[str],
    rows: Sequence[Sequence[str | Text]],
    *,
    title: str | None = None,
    whole: Collection[str] = ("state",),
    folded: Collection[str] = (),
) -> Table:
    """A table of ``rows``, each cell shown literally (never read as markup). In a narrow
    terminal the columns in ``whole`` keep their widest cell's width (never cut or wrapped),
    those in ``folded`` wrap (never cut); the others give way first, cut with an ellipsis."""
    from rich.table import Table
    from rich.text import Text

    cells = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for place, column in enumerate(columns):
        if column in whole:
            widest = max((row[place].cell_len for row in cells), default=0)
            table.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:
            table.add_column(column, overflow="fold" if column in folded else "ellipsis")
    for row in cells:
        table.add_row(*row)
    return table


def _state(state: str) -> Text:
    from rich.text import Text

    return Text(state, style=STATE_STYLE.get(state, ""))


def _states(counts: dict[str, int]) -> Text:
    """``done 3, running 1``, each state in its colour."""
    from rich.text import Text

    return Text(", ").join(Text.assemble(_state(k), f" {v}") for k, v in sorted(counts.items()))


def _line(*parts: str | tuple[str, str] | Text) -> Text:
    """One line of plain strings, (text, style) pairs and texts: nothing read as markup."""
    from rich.text import Text

    return Text.assemble(*parts)


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
    console.print(_line((f"{data.total} tasks", "bold"), ": ", _states(data.counts) or "none"))
    console.print(f"cost so far: ${data.cost_usd:.2f}, {short_count(data.tokens)} tokens")
    if data.counts.get("review"):
        waiting = data.counts["review"]
        console.print(f"[bold]{waiting} task(s) wait for your review[/]: cw review list")
    console.print(
        _grid(
            ("initiative", "phase", "plan", "state", "progress", "cost", "tokens", "states"),
            [
                (
                    p.initiative,
                    p.phase,
                    p.plan,
                    _state(p.state),
                    f"{p.done}/{p.total}",
                    f"${p.cost_usd:.2f}",
                    short_count(p.tokens),
                    _states(p.states),
                )
                for p in data.plans
            ],
            title="Plans",
            whole=("state",),
            folded=("initiative", "states"),
        )
    )
    for b in data.budgets:
        if b.exhausted:
            console.print(
                _line(
                    ("budget spent:", "red"),
                    f" {b.describe()}: no new work starts there; raise it with cw budget set",
                )
            )
    if data.running:
        agent_table(data.running, title="Running agents", console=console, here=here)
    if data.blocked:
        _blocked(data, console)
    _needs_you(data, console)


def _blocked(data: Status, console: Console) -> None:
    """The tasks that wait on dependencies: those a failed one blocks first, then the rest."""
    rows = sorted(data.blocked, key=lambda w: w.state != "blocked")
    console.print(
        _grid(
            ("task", "state", "waits on"),
            [(w.task, _state(w.state), ", ".join(w.waits_on)) for w in rows[:BLOCKED_ROWS]],
            title="Waiting on dependencies",
            folded=("task",),
        )
    )
    if len(rows) > BLOCKED_ROWS:
        console.print(f"… and {len(rows) - BLOCKED_ROWS} more (cw task list)")


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

#: Unresponsive agents named by `cw status`; the rest are counted.
NAMED_AGENTS = 20


def _needs_you(data: Status, console: Console) -> None:
    for pause in data.paused:
        console.print(_line(("paused:", "bold yellow"), f" {pause.describe()}"))
    _unresponsive(data, console)
    waited = time.time() - data.queued_since if data.queued_since is not None else 0.0
    live = any(a.state == "running" for a in data.running)  # an unresponsive one runs nothing
    if waited > QUEUED_ALONE_SECONDS and not live and not data.paused:
        queued = data.counts.get("queued", 0)
        console.print(
            f"[bold yellow]nothing runs:[/] {queued} task(s) sent to the workers, the first "
            f"{waited:.0f} s ago, and no agent runs: is an agent worker up? "
            "(`cw worker`, or `cw server`)"
        )
    if data.no_changes:
        keys = ", ".join(data.no_changes[:20])
        console.print(
            f"done with no changes (their agents committed nothing): {keys}", markup=False
        )
    for a in data.attention:
        why = "; ".join(part for part in (a.error, _NEXT_STEP.get(a.state)) if part)
        console.print(
            _line(
                ("needs you:", "bold"), f" {a.task} is ", _state(a.state), f": {why}" if why else ""
            )
        )
    if data.messages_pending:
        console.print(
            f"[bold]messages:[/] {data.messages_pending} pending: `cw message list --pending`, "
            "then `cw message answer ID TEXT`"
        )


def _unresponsive(data: Status, console: Console) -> None:
    """Agents whose lease expired: their tasks still say running, nothing works on them."""
    dead = [a for a in data.running if a.state == "unresponsive"]
    if not dead:
        return
    named = ", ".join(f"{a.name} (task {a.task})" for a in dead[:NAMED_AGENTS])
    more = f" and {len(dead) - NAMED_AGENTS} more" if len(dead) > NAMED_AGENTS else ""
    console.print(
        _line(
            ("warning:", "bold red"),
            f" {len(dead)} agent(s) unresponsive: {named}{more}: "
            "their workers stopped renewing the lease; the reconciler (`cw beat`) gives "
            "their tasks another attempt",
        )
    )


def task_table(rows: list[TaskListing]) -> None:
    """One row a task; an initiative column once there are several (keys repeat across them)."""
    several = len({r.initiative for r in rows}) > 1
    columns = ("id", *(("initiative",) if several else ()), "key", "name", "plan", "state")
    table = _grid(
        (*columns, "attempt", "agent"),
        [
            (
                str(r.id),
                *((r.initiative,) if several else ()),
                r.key,
                r.name,
                r.plan,
                _line(_state(r.state), " (no changes)" if r.no_changes else ""),
                str(r.attempt),
                r.agent or "-",
            )
            for r in rows
        ],
        whole=("id", "state"),
        folded=("key", "name"),
    )
    _console().print(table)


def agent_table(
    rows: list[AgentView],
    title: str | None = None,
    console: Console | None = None,
    here: str = "",
) -> None:
    """``here``: this host's name; worktrees of other hosts are not looked for on this disk.
    A terminal too narrow for every column leaves out the least needed (AGENT_DROPS), saying so."""
    console = console or _console()
    cells = [
        (
            r.name,
            r.task,
            _state(r.state),
            str(r.attempt or "-"),
            "-" if r.runtime_seconds is None else f"{r.runtime_seconds:.1f}s",
            _ago(r.last_activity_at),
            f"${r.cost_usd:.2f}",
            short_count(r.tokens),
            r.host or "-",
            worktree(r.worktree, r.host, here),
            r.session_id or "-",
        )
        for r in rows
    ]
    left_out = _left_out(AGENT_COLUMNS, cells, AGENT_DROPS, console.width)
    kept = [place for place, column in enumerate(AGENT_COLUMNS) if column not in left_out]
    console.print(
        _grid(
            [AGENT_COLUMNS[place] for place in kept],
            [[row[place] for place in kept] for row in cells],
            title=title,
            whole=("name", "state"),
            folded=("task",),
        )
    )
    if left_out:
        console.print(
            f"(too narrow for {', '.join(left_out)}: `cw agent list | cat` shows every column)",
            style="dim",
        )


def _left_out(
    columns: Sequence[str], rows: Sequence[Sequence[str | Text]], drops: Sequence[str], width: int
) -> list[str]:
    """The columns of ``drops``, in order, to leave out for the rest to fit ``width`` (a path
    counted at CUT_PATH_WIDTH: rich cuts it, the rest whole)."""
    from rich.cells import cell_len

    widths = {
        column: max([len(column), *(cell_len(str(row[place])) for row in rows)])
        for place, column in enumerate(columns)
    }
    if "worktree" in widths:
        widths["worktree"] = min(widths["worktree"], CUT_PATH_WIDTH)
    left_out: list[str] = []
    for column in drops:
        if sum(w + 3 for c, w in widths.items() if c not in left_out) + 1 <= width:
            break
        left_out.append(column)
    return left_out


def task_detail(d: TaskDetail, here: str = "") -> None:
    console = _console()
    console.print(_line((d.key, "bold"), f" (id {d.id}): {d.name}"))
    if d.no_changes:
        console.print("  no changes: its agent committed nothing; the check passed without them")
    for label, key in DETAIL_FIELDS:
        value = (
            worktree(d.worktree, _last_host(d), here)
            if key == "worktree" and d.worktree
            else getattr(d, key)
        )
        if key == "agent" and value:
            value += _unresponsive_run(d)
        if value not in (None, "", []):
            console.print(f"  {label:<9} {getattr(value, 'value', value)}", markup=False)
    console.print(f"  {'needs':<9} {', '.join(d.depends_on) or '-'}", markup=False)
    console.print(f"  {'needed by':<9} {', '.join(d.dependents) or '-'}", markup=False)
    if d.conflict_files:
        console.print(f"  {'conflicts':<9} {', '.join(d.conflict_files)}", markup=False)
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


def _unresponsive_run(d: TaskDetail, now: float | None = None) -> str:
    """What to add to a running task's agent whose lease expired: it is unresponsive."""
    runs = [run for run in d.runs if run.attempt == d.attempt and run.state == "running"]
    now = time.time() if now is None else now
    if d.state != "running" or not runs or runs[0].lease_expires_at >= now:
        return ""
    return (
        f" (unresponsive: no heartbeat for {_ago(runs[0].heartbeat_at).removesuffix(' ago')}; "
        "its worker stopped renewing the lease, the reconciler gives the task another attempt)"
    )


def _spent(run: AttemptRecord) -> str:
    """A run's cost and tokens, the tokens by kind."""
    t = Tokens.of(run.usage)
    kinds = (
        ("input", t.input),
        ("output", t.output),
        ("cache read", t.cache_read),
        ("cache write", t.cache_write),
    )
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
    table = _grid(
        ("id", "task", "from", "state", "question", "options", "answer"),
        [
            (
                str(r.id),
                r.task,
                r.agent or r.author,
                _state(r.state),
                _first_line(r.body),
                ", ".join(r.options) or "-",
                _first_line(r.answer or "-"),
            )
            for r in rows
        ],
        whole=("id", "state"),
        folded=("task",),
    )
    _console().print(table)


def message_detail(m: MessageDetail) -> None:
    console = _console()
    who = f"agent {m.agent}" if m.agent and m.author == "agent" else m.author
    console.print(
        _line(
            (f"message {m.id}", "bold"),
            f" from {who} on task {m.task} ({m.task_name}, ",
            _state(m.task_state),
            ")",
        )
    )
    console.print(_line("  state     ", _state(m.state), f"  asked {_ago(m.created_at)}"))
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
