"""``cw status --watch``: the web page's board in the terminal, redrawn in place (rich Live),
grouped the same way: what needs a person first, then what runs, what waits, what is done."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cw.cli.common import until_ctrl_c
from cw.cli.render import STATE_STYLE
from cw.store.read import seconds, short_count
from cw.web.board import Board
from cw.web.render import ago, money

#: Rows each section shows; the rest is counted.
ROWS = 8


def watch(read: Callable[[], Board], every: float) -> None:
    """Redraw the board every ``every`` seconds until Ctrl-C (one raised as KeyboardInterrupt
    while SQLAlchemy's finalizers ran during a read was lost, and the board went on)."""
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if not console.is_terminal:  # a pipe or a file: each board after the last, as it is drawn
        with until_ctrl_c() as stop:
            while not stop.is_set():
                console.print(draw(read()))
                console.file.flush()
                stop.wait(every)
        return
    with (
        until_ctrl_c() as stop,
        Live(console=console, auto_refresh=False, screen=True) as live,
    ):
        while not stop.is_set():
            live.update(draw(read()), refresh=True)
            stop.wait(every)


def draw(board: Board) -> RenderableType:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(board.counts.items()))
    head = Text(
        f"cw, {time.strftime('%H:%M:%S')}: {board.total} tasks: {counts or 'none'}; "
        f"spent {money(board.cost_usd)}, {short_count(board.tokens)} tokens  (Ctrl-C to stop)"
    )
    parts: list[RenderableType] = [head]
    parts += [Text(f"paused: {p.describe()}", style="bold yellow") for p in board.paused]
    parts += [
        _section("Needs input", ("message", "task", "question"),
                 [(str(m.id), m.task, m.body.splitlines()[0] if m.body else "")
                  for m in board.needs_input]),
        _section("Review", ("task", "agent", "changes", "waiting"),
                 [(r.key, r.agent, board.diffstats.get(r.key, ""), ago(r.since))
                  for r in board.review]),
        _section("Failed", ("task", "state", "error"),
                 [(t.key, _state(t.state), (t.last_error or "").splitlines()[0] if t.last_error
                   else "") for t in board.failed], board.more.get("failed", 0)),
        _section("Running", ("agent", "task", "state", "elapsed", "cost", "tokens"),
                 [(a.name, a.task, _state(a.state), seconds(a.runtime_seconds),
                   money(a.cost_usd), short_count(a.tokens)) for a in board.running]),
        _section("Waiting / blocked", ("task", "state", "waits on"),
                 [(t.key, _state(t.state), ", ".join(board.waits_on.get(t.key, [])))
                  for t in board.waiting], board.more.get("waiting", 0)),
        _section("Done", ("task", "agent", "finished"),
                 [(t.key, t.agent or "-", ago(t.state_changed_at)) for t in board.done],
                 board.more.get("done", 0)),
    ]  # fmt: skip
    return Group(*parts)


def _state(state: str) -> Text:
    """A task's or an agent's state in its colour (``unresponsive``, a dead agent's, in red)."""
    return Text(str(state), style=STATE_STYLE.get(state, ""))


def _section(
    title: str, columns: tuple[str, ...], rows: list[tuple[str | Text, ...]], more: int = 0
) -> Table:
    """A section's first ``ROWS`` rows under its title and how many it has in all: ``more``
    are those the board read did not return (``Board.more``)."""
    total = len(rows) + more
    table = Table(title=f"{title} ({total})", title_justify="left", expand=False)
    for column in columns:
        table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=60)
    for row in rows[:ROWS]:  # Text: nobody's words read as markup
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    if total > ROWS:
        table.add_row(Text(f"... and {total - ROWS} more"), *[""] * (len(columns) - 1))
    return table
