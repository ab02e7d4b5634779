"""What `cw status` asks of a person, said in words."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import cast

import pytest
from rich.console import Console

from cw.cli import render
from cw.cli.render import _needs_you, agent_table
from cw.states import TaskState
from cw.store.read import AgentView, Pause, PlanSummary, Status
from cw.store.read.status import Attention, Blocked


def test_each_task_that_needs_a_person_says_why_or_what_to_do() -> None:
    attention = [
        Attention("ask", TaskState.WAITING, None),
        Attention("long", TaskState.STOPPED, None),
        Attention("clash", TaskState.CONFLICT, "merge conflict in shared.txt"),
        Attention("broke", TaskState.FAILED, "agent exited with 1"),
    ]
    data = SimpleNamespace(
        paused=[],
        no_changes=[],
        attention=attention,
        messages_pending=0,
        queued_since=None,
        running=[],
    )
    out = io.StringIO()
    _needs_you(cast(Status, data), Console(file=out, width=200, color_system=None))
    assert out.getvalue().splitlines() == [
        "needs you: ask is waiting: its agent asked something: `cw message list --pending`",
        "needs you: long is stopped: `cw agent resume` continues it",
        "needs you: clash is conflict: merge conflict in shared.txt; `cw task retry` sends it "
        "back to its agent, `cw task cancel` gives it up",
        "needs you: broke is failed: agent exited with 1; `cw task retry` tries again, "
        "`cw task cancel` gives it up",
    ]


def agent(name: str, state: str = "running", task: str = "t") -> AgentView:
    return AgentView(
        name=name, task_id=1, task=task, state=state, attempt=1, worktree="/w/" + "x" * 90,
        session_id="s" * 36, worker="w", host="some-host.example.com", pid=None,
        runtime_seconds=1.0, last_activity_at=None, cost_usd=0.0, tokens=0,
    )  # fmt: skip


def status_data(**fields: object) -> Status:
    values: dict[str, object] = dict(
        counts={}, total=0, cost_usd=0.0, costs={}, tokens=0, token_counts={}, budgets=[],
        plans=[], running=[], blocked=[], attention=[], messages_pending=0, no_changes=[],
        paused=[], queued_since=None,
    )  # fmt: skip
    return Status(**{**values, **fields})  # type: ignore[arg-type]


def printed(draw: Callable[[Console], object], width: int = 200) -> list[str]:
    out = io.StringIO()
    draw(Console(file=out, width=width, color_system=None, emoji=False))
    return out.getvalue().splitlines()


def test_an_unresponsive_agent_is_named_and_is_no_running_one() -> None:
    """Every agent dead: the "nothing runs" hint speaks, and says which are unresponsive."""
    data = status_data(
        running=[agent("amber-badger", "unresponsive", "a")],
        counts={"queued": 2},
        queued_since=time.time() - 120,
    )
    lines = " ".join(" ".join(printed(partial(_needs_you, data))).split())
    assert "1 agent(s) unresponsive: amber-badger (task a)" in lines
    assert "nothing runs: 2 task(s) sent to the workers" in lines
    live = status_data(running=[agent("b")], counts={"queued": 2}, queued_since=time.time() - 120)
    assert printed(partial(_needs_you, live)) == []


def test_stored_text_is_never_read_as_markup() -> None:
    data = status_data(
        attention=[Attention("t[/]", TaskState.FAILED, "FAILED test_total[eur-2] [bold]x")],
        no_changes=["[red]k"],
    )
    lines = "\n".join(printed(partial(_needs_you, data)))
    assert "needs you: t[/] is failed: FAILED test_total[eur-2] [bold]x" in lines
    assert "[red]k" in lines


def test_at_80_columns_the_agent_name_and_state_are_never_cut() -> None:
    rows = [agent("amber-badger", "unresponsive", "5-ledger-schema"), agent("azure-ferret")]
    lines = printed(lambda console: agent_table(rows, console=console), width=80)
    assert all(len(line) <= 80 for line in lines), lines
    assert any("amber-badger" in line and "unresponsive" in line for line in lines), lines
    assert any("azure-ferret" in line and "running" in line for line in lines), lines
    assert "too narrow for session" in " ".join(lines)


def test_each_plan_says_its_state_and_at_80_columns_the_word_is_never_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    states = {"pending": 3, "ready": 2, "cancelled": 1, "blocked": 1}
    plan = PlanSummary("payments-and-ledger", "01", "01-01", 0, 7, states, 1.5, 12_000)
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, emoji=False)
    monkeypatch.setattr(render, "_console", lambda: console)
    render.status(status_data(plans=[plan], total=7, counts=states))
    lines = out.getvalue().replace("┃", "│").splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    heading, row = (line.split("│")[1:-1] for line in lines if "plan" in line or "01-01" in line)
    assert heading[3].strip() == "state" and row[3].strip() == "not started", lines


def test_blocked_tasks_come_first_and_the_rest_are_counted() -> None:
    blocked = [Blocked(f"p{i}", TaskState.PENDING, ["x"]) for i in range(60)]
    blocked.append(Blocked("stuck", TaskState.BLOCKED, ["broke"]))
    lines = printed(partial(render._blocked, status_data(blocked=blocked)))
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == render.BLOCKED_ROWS and "stuck" in rows[0]
    assert lines[-1] == "… and 11 more (cw task list)"


def test_a_pause_that_ends_on_another_day_says_the_date() -> None:
    now = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
    pause = Pause("claude", now + 3 * 86400, "weekly", now, "a")
    assert "until 2025-06-18 15:06:40 UTC (task a hit it)" in pause.describe(now)
    assert "until 16:06:40 UTC:" in Pause("claude", now + 3600, "", now, None).describe(now)
