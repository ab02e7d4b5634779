"""Commands that change the district: init, dispatch, task retry/cancel, budgets, limits."""

from __future__ import annotations

import json
from typing import Any

import click

from cw import defaults
from cw.cli.common import MAX_USD, Finite, load_settings, open_store, task_command, token_count
from cw.district import District
from cw.errors import UsageError
from cw.git import branches, hub, runner
from cw.settings import Settings, branch_name_ok
from cw.states import TaskState
from cw.store import db
from cw.store.read import short_count
from cw.store.records import Scope
from cw.transport.celeryapp import connected_app, make_app
from cw.transport.dispatch import dispatch_ready, resend_queued


@click.command()
@click.option("--integration-branch", default=None, help="Branch that collects merged work.")
def init(integration_branch: str | None) -> None:
    """Set up cw in the current git repository (.cw/, database, integration branch)."""
    settings = load_settings().require_top()
    head = branches.head_sha(settings.repo)
    if head is None:
        raise UsageError(f"{settings.repo} has no commits yet: make a first commit, then cw init")
    branch = _integration_branch(settings, integration_branch)
    folders = (settings.state_dir, settings.log_dir, settings.worktree_dir, settings.lock_dir)
    for path in folders:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path} is in the way: cw needs a folder there; move it away")
    # The branch first: a repository git refuses it in gets no half-made .cw/.
    runner.prepare_repository(settings.repo)
    sha = branches.ensure_branch(settings.repo, branch, head)
    where = _meet_at_hub(settings, branch, sha) if settings.git_hub else ""
    sha = branches.branch_sha(settings.repo, branch) or sha
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)
    config = settings.state_dir / defaults.CONFIG_FILE
    if not config.exists():
        config.write_text(f"integration_branch = {json.dumps(branch)}\n", encoding="utf-8")
    runner.exclude_path(settings.repo, f"/{defaults.STATE_DIR}/")
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    engine.dispose()
    click.echo(
        f"cw: initialised {settings.state_dir} (integration branch {branch} at {sha[:10]}{where})"
    )


def _meet_at_hub(settings: Settings, branch: str, sha: str) -> str:
    """The hub holds the integration branch every host starts from: publish ours or take its.
    Says which happened."""
    ref = f"refs/heads/{branch}"
    if hub.fetch_branch(settings.repo, settings.git_hub, branch, ref):
        return f", taken from the hub {settings.git_hub}"
    hub.push_branch(settings.repo, settings.git_hub, sha, branch)
    return f", published to the hub {settings.git_hub}"


def _integration_branch(settings: Settings, requested: str | None) -> str:
    branch = settings.integration_branch if requested is None else requested
    if branch.startswith("refs/"):
        raise UsageError(
            f"--integration-branch: {branch!r}: give the branch's name (without refs/heads/)"
        )
    if requested and settings.initialized and requested != settings.integration_branch:
        raise UsageError(
            f"already initialised with integration branch {settings.integration_branch!r}; "
            f"to change it, edit {settings.state_dir / defaults.CONFIG_FILE}"
        )
    if not (branch_name_ok(branch) and branches.is_valid_branch_name(settings.repo, branch)):
        raise UsageError(f"--integration-branch: {branch!r} is not a valid git branch name")
    if branch == branches.checked_out(settings.repo):
        raise UsageError(
            f"--integration-branch: {branch!r} is the branch checked out here; cw moves its "
            "integration branch by itself, so it needs one of its own (the default: "
            f"{defaults.INTEGRATION_BRANCH})"
        )
    _refuse_in_the_way(settings, branch)
    return branch


def _refuse_in_the_way(settings: Settings, branch: str) -> None:
    """A branch where git needs a folder of cw's branches (``cw`` holds ``cw/integration``
    and ``cw/task/...``): git could make none of them."""
    folders = {*_folders(branch), *_folders(defaults.TASK_BRANCH_PREFIX + "_")}
    for folder in sorted(folders):
        if branches.branch_sha(settings.repo, folder) is not None:
            raise UsageError(
                f"a branch {folder!r} exists where git needs a folder of cw's branches "
                f"({folder}/...): rename it (git branch -m {folder} NEW), then cw init"
            )


def _folders(name: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``a/b``."""
    parts = name.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts))]


def _app(settings: Settings, check: bool = False) -> Any:
    return connected_app(settings) if check else make_app(settings)


@click.command()
@click.option("--resend", is_flag=True, help="Also send again tasks claimed but not started.")
def dispatch(resend: bool) -> None:
    """Claim and send every ready task now (workers and merges do this by themselves)."""
    settings = load_settings()
    store = open_store(settings)
    app = _app(settings, check=True)
    claims = dispatch_ready(store, app, settings)
    resent = resend_queued(store, app) if resend else 0
    click.echo(f"cw: dispatched {len(claims)} task(s), resent {resent}")


@task_command("retry")
def task_retry(district: District, task_id: int, ref: str) -> None:
    """Give a failed task a new attempt (same branch and worktree) and dispatch it."""
    state = district.retry(task_id)
    # A worker's or the reconciler's dispatch may have sent it first: say where it is now.
    held = state == TaskState.READY and task_id in district.store.over_budget()
    why = "; its budget is spent: it starts once the cap is raised (cw budget list)" if held else ""
    click.echo(f"cw: task {ref} retried; it is {state.value} now{why}")


@task_command("cancel")
def task_cancel(district: District, task_id: int, ref: str) -> None:
    """Cancel a task not started, or give up one in your hands (failed, conflict, stopped,
    review, waiting): its branch keeps its work; what depends on it is blocked."""
    district.cancel(task_id)
    click.echo(f"cw: task {ref} cancelled")


@click.command("set")
@click.argument("usd", type=Finite(min=0, max=MAX_USD), required=False)
@click.option("--tokens", default=None, help="A cap in tokens: 2M, 500k, 1500000.")
@click.option("--plan", "plan", default=None, help="Plan id or key, e.g. 02-03.")
@click.option("--initiative", "initiative", default=None, help="Initiative name.")
def budget_set(
    usd: float | None, tokens: str | None, plan: str | None, initiative: str | None
) -> None:
    """Cap a plan's or an initiative's cost in USD, in tokens (--tokens), or both."""
    scope = Scope(plan, initiative)
    if usd is None and tokens is None:
        raise UsageError("give a cap: USD, --tokens COUNT, or both")
    cap = None if tokens is None else token_count(tokens, "--tokens")
    District.open(load_settings()).set_budget(scope, usd=usd, tokens=cap)
    caps = [f"${usd:.2f}"] if usd is not None else []
    caps += [f"{short_count(cap)} tokens"] if cap is not None else []
    click.echo(f"cw: budget of {scope.name} set to {' and '.join(caps)}")


@click.command("remove")
@click.option("--usd", is_flag=True, help="Only the cap in USD.")
@click.option("--tokens", is_flag=True, help="Only the cap in tokens.")
@click.option("--plan", "plan", default=None, help="Plan id or key, e.g. 02-03.")
@click.option("--initiative", "initiative", default=None, help="Initiative name.")
def budget_remove(usd: bool, tokens: bool, plan: str | None, initiative: str | None) -> None:
    """Take a plan's or an initiative's caps away (both, or only --usd or --tokens)."""
    scope = Scope(plan, initiative)
    both = not (usd or tokens)
    District.open(load_settings()).remove_budget(scope, usd=usd or both, tokens=tokens or both)
    which = "caps" if both or (usd and tokens) else "cap in USD" if usd else "cap in tokens"
    click.echo(f"cw: budget of {scope.name}: {which} removed")


@click.command("resume")
@click.argument("adapter", required=False)
def limits_resume(adapter: str | None) -> None:
    """Start agents again now, though a usage limit paused them (e.g. the plan was upgraded)."""
    if adapter is not None and adapter not in defaults.ADAPTER_NAMES:
        raise UsageError(f"no adapter {adapter!r}: one of {', '.join(defaults.ADAPTER_NAMES)}")
    lifted = District.open(load_settings()).resume_limits(adapter)
    if not lifted:
        raise UsageError(f"no {adapter + ' ' if adapter else ''}usage-limit pause is in force")
    click.echo(f"cw: {', '.join(lifted)} resumed: new agents start again")
