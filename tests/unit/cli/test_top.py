"""`cw status --watch`: the board's sections as the terminal shows them."""

from __future__ import annotations

import io

from rich.console import Console

from cw.cli.top import draw
from cw.states import TaskState
from cw.store.read import AgentView, TaskListing
from cw.web.board import SECTION_ROWS, Board


def task(n: int, state: TaskState) -> TaskListing:
    return TaskListing(
        id=n, key=f"t{n}", name=f"t{n}", kind="auto", state=state, attempt=0, branch=None,
        last_error=None, state_changed_at=0.0, plan="01-01", phase="01", initiative="i",
        agent=None, cost_usd=0.0, tokens=0, no_changes=False,
    )  # fmt: skip


def board(**fields: object) -> Board:
    values: dict[str, object] = dict(
        generated_at=0.0, change="", counts={}, total=0, cost_usd=0.0, tokens=0, paused=[],
        needs_input=[], review=[], diffstats={}, failed=[], running=[], waiting=[],
        waits_on={}, done=[], more={},
    )  # fmt: skip
    return Board(**{**values, **fields})  # type: ignore[arg-type]


def shown(b: Board) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(draw(b))
    return out.getvalue()


def test_sections_count_every_row_not_only_those_read() -> None:
    waiting = [task(n, TaskState.PENDING) for n in range(SECTION_ROWS)]
    done = [task(n, TaskState.DONE) for n in range(SECTION_ROWS)]
    text = shown(board(waiting=waiting, done=done, more={"waiting": 9200, "done": 100}))
    assert "Waiting / blocked (9400)" in text and "... and 9392 more" in text
    assert "Done (300)" in text and "... and 292 more" in text


def test_the_running_section_says_which_agents_are_unresponsive() -> None:
    dead = AgentView(
        name="amber-badger", task_id=1, task="a", state="unresponsive", attempt=1,
        worktree=None, session_id=None, worker="w", host="h", pid=None, runtime_seconds=10.0,
        last_activity_at=None, cost_usd=0.0, tokens=0,
    )  # fmt: skip
    (line,) = [line for line in shown(board(running=[dead])).splitlines() if "amber" in line]
    assert "unresponsive" in line
