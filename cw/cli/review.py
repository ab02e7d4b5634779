"""``cw review``: look at finished work before it merges; approve it, or reject it with
feedback for its agent; set a plan's or an initiative's review mode."""

from __future__ import annotations

import time

import click

from cw import defaults
from cw.cli.common import load_settings, open_store, show, task_command
from cw.district import District
from cw.errors import UsageError
from cw.git import branches
from cw.settings import Settings
from cw.store.read import ReviewListing
from cw.store.records import Scope


@click.command("list")
@click.option("--json", "as_json", is_flag=True)
def review_list(as_json: bool) -> None:
    """Work waiting for review: task, agent, plan, diffstat, check, cost, age."""
    settings = load_settings()
    rows = open_store(settings).review_rows()

    def human(items: list[ReviewListing]) -> None:
        if not items:
            click.echo("nothing waits for review")
        for r in items:
            age = int(time.time() - r.since)
            changes = branches.diffstat(settings.repo, settings.integration_branch, r.branch)
            click.echo(
                f"{r.key}  {r.agent}  plan {r.plan}  {changes}  "
                f"check: {_check(r)}  ${r.cost_usd:.2f}  waiting {age}s"
            )

    show(rows, as_json, human)


@click.command("show")
@click.argument("ref")
@click.option(
    "--json", "as_json", is_flag=True, help="The review's row (`cw task diff` for the diff)."
)
def review_show(ref: str, as_json: bool) -> None:
    """What the agent said, its diff against the integration branch, and its check's output."""
    settings = load_settings()
    store = open_store(settings)
    task_id = store.find_task_id(ref)
    row = next((r for r in store.review_rows() if r.id == task_id), None)
    if row is None:
        raise UsageError(f"task {ref} is {store.task_state(task_id).value}, not in review")
    show(row, as_json, lambda row: _show(settings, row))


def _show(settings: Settings, row: ReviewListing) -> None:
    click.echo(f"{row.key}: {row.name} (agent {row.agent}, attempt {row.attempt}, plan {row.plan})")
    click.echo(f"summary: {row.summary or '-'}")
    click.echo(f"check: {_check(row)}")
    if row.check.output:
        click.echo(row.check.output.rstrip())
    if row.branch:
        base = settings.integration_branch
        stat = branches.diff(settings.repo, base, branch=row.branch, stat=True)
        click.echo(stat.rstrip())
        text = branches.diff(settings.repo, base, branch=row.branch)
        click.echo(text, nl=not text.endswith("\n"))


@task_command("approve")
def review_approve(district: District, task_id: int, ref: str) -> None:
    """Approve the work: it goes to the merge queue, and is done once merged."""
    district.approve(task_id)
    click.echo(f"cw: task {ref} approved: queued for merge")


@task_command("reject")
@click.option("-m", "--message", "feedback", required=True, help="Feedback for the agent.")
def review_reject(district: District, task_id: int, ref: str, feedback: str) -> None:
    """Send the work back to its agent with feedback: the same session resumes."""
    district.reject(task_id, feedback)
    click.echo(f"cw: task {ref} sent back to its agent with your feedback")


@click.command("mode")
@click.argument("mode", type=click.Choice(defaults.SCOPE_REVIEW_MODES))
@click.option("--plan", "plan", default=None, help="Plan id or key, e.g. 02-03.")
@click.option("--initiative", "initiative", default=None, help="Initiative name.")
def review_mode(mode: str, plan: str | None, initiative: str | None) -> None:
    """A plan's or an initiative's review mode: auto, manual, or inherit (the one above it;
    the district's is the `review` setting)."""
    scope = Scope(plan, initiative)
    District.open(load_settings()).set_review_mode(scope, mode)
    click.echo(f"cw: review of {scope.name}: {mode}")


def _check(row: ReviewListing) -> str:
    command = row.check.command
    return f"passed (`{command}`)" if command else "passed (no check to run)"
