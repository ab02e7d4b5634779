"""The ``cw`` command: every user-facing entry point (INFRA-01)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from cw import __version__, broker, db, defaults, render, views, worktrees
from cw.celeryapp import make_app
from cw.dispatch import dispatch_ready, resend_queued
from cw.errors import BrokerError, CwError, UsageError
from cw.plans import load_plan
from cw.settings import Settings
from cw.store import Store


class CwGroup(click.Group):
    """Turns a CwError into one line on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CwError as exc:
            click.echo(f"cw: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _settings() -> Settings:
    return Settings.load()


def _store(settings: Settings) -> Store:
    return Store.open(settings.require_initialized().db_url)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=CwGroup)
@click.version_option(__version__, prog_name="cw")
@click.option("-v", "--verbose", is_flag=True, help="Log what cw does to stderr.")
def cli(verbose: bool) -> None:
    """cw (Codewalk District): many coding agents on one repository, merged in order."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@cli.command()
@click.option("--integration-branch", default=None, help="Branch that collects merged work.")
def init(integration_branch: str | None) -> None:
    """Set up cw in the current git repository (.cw/, database, integration branch)."""
    settings = _settings()
    head = worktrees.head_sha(settings.repo)
    if head is None:
        raise UsageError(f"{settings.repo} has no commits yet: make a first commit, then cw init")
    branch = integration_branch or settings.integration_branch
    for path in (settings.state_dir, settings.log_dir, settings.worktree_dir, settings.lock_dir):
        path.mkdir(parents=True, exist_ok=True)
    config = settings.state_dir / defaults.CONFIG_FILE
    if not config.exists():
        config.write_text(f'integration_branch = "{branch}"\n', encoding="utf-8")
    worktrees.exclude_path(settings.repo, f"/{defaults.STATE_DIR}/")
    worktrees.prepare_repository(settings.repo)
    sha = worktrees.ensure_branch(settings.repo, branch, head)
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    engine.dispose()
    click.echo(f"cw: initialised {settings.state_dir} (integration branch {branch} at {sha[:10]})")


@cli.group()
def submit() -> None:
    """Submit work."""


@submit.command("plan")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-dispatch", is_flag=True, help="Store the plan but send nothing yet.")
def submit_plan(path: Path, no_dispatch: bool) -> None:
    """Store a plan (GSD PLAN.md, a .planning/ directory, or cw YAML) and dispatch what is ready."""
    settings = _settings().require_initialized()
    spec = load_plan(path)
    app = None if no_dispatch else _app(settings, check=True)
    store = _store(settings)
    initiative_id = store.submit(spec)
    tasks = spec.tasks()
    click.echo(
        f"cw: submitted initiative {spec.name!r} (id {initiative_id}): {len(tasks)} tasks in "
        f"{sum(len(p.plans) for p in spec.phases)} plans"
    )
    if app is not None:
        claims = dispatch_ready(store, app)
        click.echo(f"cw: dispatched {len(claims)} ready task(s)")


def _app(settings: Settings, check: bool = False) -> Any:
    app = make_app(settings)
    if check:
        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.2)
        except Exception as exc:  # kombu raises transport-specific errors
            raise BrokerError(f"cannot reach the broker {app.conf.broker_url}: {exc}") from exc
    return app


@cli.command()
@click.option("--resend", is_flag=True, help="Also send again tasks claimed but not started.")
def dispatch(resend: bool) -> None:
    """Claim and send every ready task now (workers and merges do this by themselves)."""
    settings = _settings()
    store = _store(settings)
    app = _app(settings, check=True)
    claims = dispatch_ready(store, app)
    resent = resend_queued(store, app) if resend else 0
    click.echo(f"cw: dispatched {len(claims)} task(s), resent {resent}")


@cli.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Agent processes in this worker (default: settings.concurrency).",
)
@click.option("--merge", "merge", is_flag=True, help="Run the merge worker (one at a time).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(concurrency: int | None, merge: bool, loglevel: str) -> NoReturn:
    """Start a worker in this terminal; start more anywhere to add capacity."""
    settings = _settings().require_initialized()
    broker.broker_url(settings)  # start the embedded broker before Celery connects
    queue = defaults.MERGE_QUEUE if merge else defaults.AGENTS_QUEUE
    count = 1 if merge else (concurrency or settings.concurrency)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        queue,
        "-c",
        str(count),
        "-P",
        "prefork",
        "-E",
        "-n",
        f"cw-{queue}-{os.getpid()}@%h",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    _exec(argv, settings)


@cli.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> NoReturn:
    """Start the periodic reconciler (dispatches whatever is ready, every few seconds)."""
    settings = _settings().require_initialized()
    broker.broker_url(settings)
    schedule = settings.state_dir / "beat-schedule"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "beat",
        "beat",
        "--loglevel",
        loglevel,
        "-s",
        str(schedule),
    ]
    _exec(argv, settings)


def _exec(argv: list[str], settings: Settings) -> NoReturn:
    env = {**os.environ, **settings.child_env()}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """All tasks at a glance: per-plan progress, counts, running agents, what waits on what."""
    data = views.status(_store(_settings()))
    if as_json:
        _emit_json(data)
    else:
        render.status(data)


@cli.command()
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--interval", type=float, default=0.5, show_default=True)
def wait(timeout: float | None, interval: float) -> None:
    """Wait until no task can move without a person; exit 1 unless every task is done."""
    store = _store(_settings())
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


@cli.group()
def task() -> None:
    """Tasks: list, show, retry, cancel."""


@task.command("list")
@click.option("--state", default=None, help="Only tasks in this state.")
@click.option("--json", "as_json", is_flag=True)
def task_list(state: str | None, as_json: bool) -> None:
    """Every task with its state, plan and agent."""
    rows = views.task_list(_store(_settings()), state)
    if as_json:
        _emit_json(rows)
    else:
        render.task_table(rows)


@task.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
def task_show(ref: str, as_json: bool) -> None:
    """One task by id or key: prompt, dependencies, attempts, merges."""
    store = _store(_settings())
    detail = store.task_detail(store.find_task_id(ref))
    if as_json:
        _emit_json(detail)
    else:
        render.task_detail(detail)


@task.command("retry")
@click.argument("ref")
def task_retry(ref: str) -> None:
    """Give a failed task a new attempt (same branch and worktree) and dispatch it."""
    settings = _settings()
    store = _store(settings)
    task_id = store.find_task_id(ref)
    store.retry_task(task_id)
    claims = dispatch_ready(store, _app(settings, check=True))
    click.echo(f"cw: task {ref} is ready again; dispatched {len(claims)} task(s)")


@task.command("cancel")
@click.argument("ref")
def task_cancel(ref: str) -> None:
    """Cancel a task that has not started; what depends on it is blocked."""
    store = _store(_settings())
    store.cancel_task(store.find_task_id(ref))
    click.echo(f"cw: task {ref} cancelled")


@cli.group()
def agent() -> None:
    """Agents: list."""


@agent.command("list")
@click.option("--json", "as_json", is_flag=True)
def agent_list(as_json: bool) -> None:
    """Every agent: task, state, worktree, session, runtime, last activity, cost."""
    rows = views.agent_list(_store(_settings()))
    if as_json:
        _emit_json(rows)
    else:
        render.agent_table(rows)


@cli.group("broker")
def broker_group() -> None:
    """The embedded broker (a private Redis under .cw/), when CW_BROKER_URL is not set."""


@broker_group.command("start")
def broker_start() -> None:
    """Start it (any command that needs it does this by itself)."""
    click.echo(broker.broker_url(_settings().require_initialized()))


@broker_group.command("stop")
def broker_stop() -> None:
    """Stop it; queued messages are kept in its append-only file under .cw/."""
    stopped = broker.stop_embedded(_settings().require_initialized())
    click.echo("cw: broker stopped" if stopped else "cw: broker was not running")


@broker_group.command("status")
def broker_status() -> None:
    settings = _settings().require_initialized()
    url = broker.broker_url(settings, start=False)
    running = bool(settings.broker_url) or broker.embedded_running(settings)
    click.echo(f"{url} ({'running' if running else 'stopped'})")


def main() -> None:
    cli(prog_name="cw")
