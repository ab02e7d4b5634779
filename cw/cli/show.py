"""Commands that only read: status, wait, task list/show, agent list."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from cw import maintenance, render, views, worktrees
from cw.cli.common import emit_json, load_settings, open_store
from cw.errors import CwError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """All tasks at a glance: per-plan progress, counts, running agents, what waits on what."""
    data = views.status(open_store(load_settings()))
    if as_json:
        emit_json(data)
    else:
        render.status(data)


@click.command()
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--interval", type=float, default=0.5, show_default=True)
def wait(timeout: float | None, interval: float) -> None:
    """Wait until no task can move without a person; exit 1 unless every task is done."""
    store = open_store(load_settings())
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        active, done, total = views.progress(store)
        if active == 0:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise CwError(f"timed out: {done}/{total} tasks done, {active} still active")
        time.sleep(interval)
    click.echo(f"cw: {done}/{total} tasks done")
    if done != total:
        sys.exit(1)


@click.command("list")
@click.option("--state", default=None, help="Only tasks in this state.")
@click.option("--json", "as_json", is_flag=True)
def task_list(state: str | None, as_json: bool) -> None:
    """Every task with its state, plan and agent."""
    rows = views.task_list(open_store(load_settings()), state)
    if as_json:
        emit_json(rows)
    else:
        render.task_table(rows)


@click.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def task_show(ref: str, as_json: bool) -> None:
    """One task by id or key: prompt, dependencies, attempts, merges."""
    store = open_store(load_settings())
    detail = store.task_detail(store.find_task_id(ref))
    detail["verify_treatment"] = views.verify_treatment(detail)
    if as_json:
        emit_json(detail)
    else:
        render.task_detail(detail)


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def agent_list(as_json: bool) -> None:
    """Every agent: task, state, worktree, session, runtime, last activity, cost."""
    rows = views.agent_list(open_store(load_settings()))
    if as_json:
        emit_json(rows)
    else:
        render.agent_table(rows)


@click.command("diff")
@click.argument("ref")
@click.option("--stat", is_flag=True, help="Files changed, not the changes.")
@click.option("--integrated", is_flag=True, help="What its merge brought into integration.")
def task_diff(ref: str, stat: bool, integrated: bool) -> None:
    """The task's changes against its base, including a running agent's uncommitted work."""
    settings = load_settings()
    store = open_store(settings)
    detail = store.task_detail(store.find_task_id(ref))
    if integrated:
        text = maintenance.integrated_diff(settings, detail, stat)
        click.echo(text, nl=not text.endswith("\n"))
        return
    if not detail["base_sha"]:
        raise CwError(f"task {ref} has not started: no changes yet")
    worktree = Path(detail["worktree"]) if detail["worktree"] else None
    if worktree is not None and worktree.is_dir():
        text = worktrees.diff(settings.repo, detail["base_sha"], worktree=worktree, stat=stat)
    elif detail["branch"] and worktrees.branch_sha(settings.repo, detail["branch"]):
        text = worktrees.diff(settings.repo, detail["base_sha"], branch=detail["branch"], stat=stat)
    elif detail["merged_sha"]:  # `cw gc` deleted the merged branch: its merge holds the changes
        text = maintenance.integrated_diff(settings, detail, stat)
    else:
        raise CwError(f"task {ref}: its branch {detail['branch']} and worktree are gone")
    click.echo(text, nl=not text.endswith("\n"))


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def budget_list(as_json: bool) -> None:
    """Every budget and what has been spent under it."""
    rows = open_store(load_settings()).budgets()
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        flag = "  (spent: no new work starts)" if r["exhausted"] else ""
        click.echo(
            f"{r['kind']} {r['name']}: ${r['spent_usd']:.2f} of ${r['budget_usd']:.2f}{flag}"
        )
