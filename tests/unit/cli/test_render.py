"""What `cw status` asks of a person, said in words."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import cast

from rich.console import Console

from cw.cli.render import _needs_you
from cw.states import TaskState
from cw.store.read import Status
from cw.store.read.status import Attention


def test_each_task_that_needs_a_person_says_why_or_what_to_do() -> None:
    attention = [
        Attention("ask", TaskState.WAITING, None),
        Attention("long", TaskState.STOPPED, None),
        Attention("clash", TaskState.CONFLICT, "merge conflict in shared.txt"),
        Attention("broke", TaskState.FAILED, "agent exited with 1"),
    ]
    data = SimpleNamespace(
        paused=[], no_changes=[], attention=attention, messages_pending=0, queued_since=None
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
