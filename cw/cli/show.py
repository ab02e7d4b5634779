"""Commands that only read: status, wait, task list/show, agent list."""

from __future__ import annotations

import contextlib
import sys
import time
from functools import partial
from pathlib import Path

import click

from cw.cli import render
from cw.cli.common import Finite, load_settings, open_store, read_listings, show, until_ctrl_c
from cw.errors import CwError, UsageError
from cw.states import TaskState
from cw.store import views
from cw.store.read import Budget, Pause
from cw.store.selects import Listings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--watch",
    "every",
    type=Finite(min=0.2),
    is_flag=False,
    flag_value=1.0,
    default=None,
    help="Redraw in place every N seconds (1 if not given) until Ctrl-C.",
)
def status(as_json: bool, every: float | None) -> None:
    """All tasks at a glance: per-plan progress, counts, running agents, what waits on what."""
    settings = load_settings()
    if every is not None:
        if as_json:
            raise UsageError("--watch redraws for people; --json is for a single read")
        from cw.cli import top  # the page's board: only for a watch
        from cw.web import board

        store = open_store(settings)
        with contextlib.suppress(KeyboardInterrupt):
            top.watch(lambda: board.read(store, settings), every)
        return
    overview = read_listings(settings, views.status)
    show(overview, as_json, partial(render.status, here=settings.hostname))


@click.command()
@click.option(
    "--timeout", type=Finite(min=0), default=None, help="Give up after this many seconds."
)
@click.option("--interval", type=Finite(min=0, min_open=True), default=0.5, show_default=True)
def wait(timeout: float | None, interval: float) -> None:
    """Wait until no task can move without a person; exit 1 unless every task is done."""
    store = open_store(load_settings())
    deadline = None if timeout is None else time.monotonic() + timeout
    with until_ctrl_c() as stop:
        while True:
            now = views.progress(store)
            if now.active == 0:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise CwError(f"timed out: {now.line()}; {now.active} still active")
            if stop.wait(interval):
                raise click.Abort  # Ctrl-C: not done waiting (exit 130)
    click.echo(f"cw: {now.line()}")
    if now.done != now.total:
        sys.exit(1)


@click.command("list")
@click.option(
    "--state",
    type=click.Choice([s.value for s in TaskState]),
    default=None,
    help="Only tasks in this state.",
)
@click.option("--json", "as_json", is_flag=True)
def task_list(state: str | None, as_json: bool) -> None:
    """Every task with its state, plan and agent."""
    rows = read_listings(load_settings(), lambda listings: views.task_list(listings, state))
    show(rows, as_json, render.task_table)


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def task_show(ref: str, as_json: bool) -> None:
    """One task by id or key: prompt, dependencies, attempts, merges."""
    settings = load_settings()
    store = open_store(settings)
    detail = store.task_detail(store.find_task_id(ref))
    show(detail, as_json, partial(render.task_detail, here=settings.hostname))


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def agent_list(as_json: bool) -> None:
    """Every agent: task, state, worktree, session, runtime, last activity, cost."""
    settings = load_settings()
    rows = read_listings(settings, views.agent_list)
    show(rows, as_json, partial(render.agent_table, here=settings.hostname))


@click.command("diff")
@click.argument("ref")
@click.option("--stat", is_flag=True, help="Files changed, not the changes.")
@click.option("--integrated", is_flag=True, help="What its merge brought into integration.")
def task_diff(ref: str, stat: bool, integrated: bool) -> None:
    """The task's changes against its base, including a running agent's uncommitted work."""
    from cw.git import branches  # GitPython and the merge machinery: only for a diff
    from cw.maintenance.merges import integrated_diff

    settings = load_settings()
    store = open_store(settings)
    detail = store.task_detail(store.find_task_id(ref))
    if integrated:
        text = integrated_diff(settings, detail, stat)
        click.echo(text, nl=not text.endswith("\n"))
        return
    if not detail.base_sha:
        if detail.kind.startswith("checkpoint"):
            raise UsageError(f"task {ref} is a checkpoint: a person's, with no changes of its own")
        raise UsageError(f"task {ref} has not started: no changes yet")
    worktree = Path(detail.worktree) if detail.worktree else None
    if worktree is not None and worktree.is_dir():
        text = branches.diff(settings.repo, detail.base_sha, worktree=worktree, stat=stat)
    elif detail.branch and branches.branch_sha(settings.repo, detail.branch):
        text = branches.diff(settings.repo, detail.base_sha, branch=detail.branch, stat=stat)
    elif detail.merged_sha:  # `cw gc` deleted the merged branch: its merge holds the changes
        text = integrated_diff(settings, detail, stat)
    else:
        raise CwError(f"task {ref}: its branch {detail.branch} and worktree are gone")
    click.echo(text, nl=not text.endswith("\n"))


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def budget_list(as_json: bool) -> None:
    """Every budget and what has been spent under it."""
    show(read_listings(load_settings(), Listings.budgets), as_json, _budget_lines)


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def limits_list(as_json: bool) -> None:
    """Adapters paused by a usage limit, and until when."""
    show(read_listings(load_settings(), Listings.pauses), as_json, _pause_lines)


def _budget_lines(rows: list[Budget]) -> None:
    """One line per budget, flagged once it is spent."""
    for r in rows:
        flag = "  (spent: no new work starts)" if r.exhausted else ""
        click.echo(f"{r.describe()}{flag}")
    if not rows:
        click.echo("no budgets: nothing caps what agents spend (cw budget set)")


def _pause_lines(rows: list[Pause]) -> None:
    """One line per pause in force, or a line saying there is none."""
    for pause in rows:
        click.echo(pause.describe())
    if not rows:
        click.echo("no usage limit in force: agents start as slots free up")
