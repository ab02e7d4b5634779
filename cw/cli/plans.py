"""``cw plan``: the plans the district holds, their versions, and cancelling one."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cw.cli.common import emit_json, load_settings, open_store
from cw.district import District
from cw.plans.diff import rollup
from cw.store.read import PlanListing


@click.group()
def plan() -> None:
    """Plans: list, show, cancel."""


@plan.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_list(as_json: bool) -> None:
    """Every plan by phase, with its state, tasks done, version and file."""
    settings = load_settings()
    rows = open_store(settings).plan_rows()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("cw: no plans yet: cw submit plan PATH")
        return
    width = max(STATE_WIDTH, *(len(_state(row)) for row in rows))
    phase = None
    for row in rows:
        if (row.initiative, row.phase) != phase:
            phase = (row.initiative, row.phase)
            click.echo(_phase_line(row, [r for r in rows if (r.initiative, r.phase) == phase]))
        click.echo(
            f"  {row.id:>4}  {row.plan:<10} {_state(row):<{width}} {_done(row):>7}  "
            f"v{row.version}  {row.source}{_missing(settings.repo / row.source)}"
        )


#: The state column's least width in ``cw plan list``: the longest word (``not started``) and
#: a space; a failing plan's count widens it for every row.
STATE_WIDTH = 12
#: Task states that make a plan failing or failed, as ``cw plan list`` counts them.
_BROKEN = (("failed", "failed"), ("conflict", "in conflict"))


def _state(row: PlanListing) -> str:
    """A plan's state; a failing or failed one says how many of its tasks failed (or are in
    conflict): ``failing (1 failed)``."""
    counts = [f"{row.states[s]} {what}" for s, what in _BROKEN if row.states.get(s)]
    return f"{row.state} ({', '.join(counts)})" if counts else row.state


def _missing(path: Path) -> str:
    """What ``cw plan list`` says of a plan whose file is gone (kept, never deleted)."""
    try:
        return "" if path.exists() else "  (missing on disk)"
    except OSError:
        return ""


def _phase_line(first: PlanListing, plans: list[PlanListing]) -> str:
    done, tasks = sum(p.done for p in plans), sum(p.tasks for p in plans)
    states = [state for p in plans for state, n in p.states.items() if n]
    name = f" {first.phase_name}" if first.phase_name != first.phase else ""
    state = rollup(states, any(p.started for p in plans))
    return f"{first.initiative}: phase {first.phase}{name}: {state}, {done}/{tasks} tasks done"


def _done(row: PlanListing) -> str:
    return f"{row.done}/{row.tasks}"


@plan.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_show(ref: str, as_json: bool) -> None:
    """One plan (id or key): its tasks, its versions and where each came from."""
    store = open_store(load_settings())
    detail = store.plan_detail(store.find_plan_id(ref))
    if as_json:
        emit_json(detail)
        return
    click.echo(f"plan {detail.plan} (id {detail.id}): {detail.name}")
    click.echo(f"  initiative  {detail.initiative}, phase {detail.phase}")
    click.echo(f"  state       {_state(detail)}, {_done(detail)} tasks done")
    click.echo(f"  version     {detail.version}, from {detail.source}")
    click.echo("  tasks")
    for task in detail.task_rows:
        click.echo(f"    {task.id:>4}  {task.key:<14} {task.state:<10} {task.name}")
    for version in reversed(detail.versions):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(version.replaced_at))
        click.echo(
            f"  version {version.version}: replaced {when}; tasks "
            f"{', '.join(version.tasks)}; from {version.source or '-'}"
        )


@plan.command("cancel")
@click.argument("ref")
def plan_cancel(ref: str) -> None:
    """Cancel a plan none of whose tasks has started; what depends on it is blocked."""
    district = District.open(load_settings())
    count = district.cancel_plan(district.store.find_plan_id(ref))
    if count == 0:
        click.echo(f"cw: plan {ref} was cancelled already; nothing changed")
        return
    click.echo(f"cw: plan {ref} cancelled ({count} task{'s' * (count != 1)})")
