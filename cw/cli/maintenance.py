"""Housekeeping commands: gc, doctor, merge status."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import TypeVar

import click

from cw.cli.common import emit_json, load_settings, open_store, show
from cw.maintenance import doctor as checks
from cw.maintenance import gc as collect
from cw.maintenance import merges, repairs
from cw.store.read import MergeStatus, QueueEntry, seconds

E = TypeVar("E", bound=QueueEntry)


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gc(dry_run: bool, as_json: bool) -> None:
    """Remove merged task worktrees and branches; never unmerged work."""
    settings = load_settings()
    report = collect.gc(settings, open_store(settings), dry_run=dry_run)
    if as_json:
        emit_json(report.as_json())
        return
    for item in report.items:
        if item.removed:
            verb = "would remove" if dry_run else "removed"
        else:
            verb = "kept"
        click.echo(f"{verb} {item.kind} {item.target}: {item.reason}")
    if not report.items:
        click.echo("cw: nothing to collect")


@click.command()
@click.option("--fix", is_flag=True, help="First remove what crashes left behind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(fix: bool, as_json: bool) -> None:
    """Check the district (integration branch, done tasks, worktrees, leftovers of crashes,
    schema); exit 1 on a problem. With --fix, repair what crashes left first."""
    settings = load_settings().require_database()
    fixed = repairs.repair(settings, open_store(settings)) if fix else []
    findings = checks.doctor(settings)
    if as_json:
        emit_json(
            {"fixed": fixed, "findings": [asdict(f) for f in findings]}
            if fix
            else [asdict(f) for f in findings]
        )
    else:
        for line in fixed:
            click.echo(f"fixed    {line}")
        for f in findings:
            fix_hint = f"  fix: {f.fix}" if f.fix and not f.ok else ""
            click.echo(f"{'ok' if f.ok else 'problem':<7}  {f.what}  [{f.where}]{fix_hint}")
    if not all(f.ok for f in findings):
        sys.exit(1)


@click.group()
def merge() -> None:
    """The merge queue."""


@merge.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def merge_status(as_json: bool) -> None:
    """Queued merges in order, the one in progress, recent merges, conflicts, failures."""
    data = merges.merge_status(open_store(load_settings()))
    show(data, as_json, _render_merge_status)


def _render_merge_status(data: MergeStatus) -> None:
    _section("queued", data.queued, lambda e: f"waiting {seconds(e.waiting_seconds)}")
    _section("in progress", data.in_progress, lambda e: f"merging for {seconds(e.running_seconds)}")
    capped = len(data.merged) == merges.RECENT_MERGES  # there may be more: only these are shown
    title = "recently merged" + (", the latest" if capped else "")
    _section(title, data.merged, lambda e: (e.sha or "")[:10])
    _section("conflicts", data.conflicts, lambda e: ", ".join(e.files))
    _section("failures", data.failures, lambda e: f"{e.state}: {e.error}")
    for b in data.bounces:
        click.echo(f"bounced: {b.task} {b.bounces} time(s) ({b.merge_attempts} merges)")


def _section(title: str, entries: list[E], describe: Callable[[E], str]) -> None:
    """One section of ``cw merge status``: its title, then each entry and what ``describe`` says."""
    click.echo(f"{title} ({len(entries)}):")
    for n, e in enumerate(entries, 1):
        click.echo(f"  {n}. {e.task} (attempt {e.attempt})  {describe(e)}")
