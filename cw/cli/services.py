"""Long-running processes: agent and merge workers, beat, Flower, the embedded broker."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from cw import defaults
from cw.agents.registry import make_adapter
from cw.cli.common import check_port_free, load_settings
from cw.errors import UsageError
from cw.git import branches
from cw.git.merging import stuck_merges
from cw.service import monitoring
from cw.settings import Settings, mask_password
from cw.store import Store
from cw.transport import broker
from cw.transport.celeryapp import connected_app, make_app, worker_argv
from cw.transport.dispatch import send_merges

#: Celery's log levels, checked here so a typo fails before a broker starts or a merge is touched.
_loglevel = click.option(
    "--loglevel",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="INFO",
    show_default=True,
)


@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, defaults.MAX_CONCURRENCY),
    default=None,
    help="Agent processes in this worker (default: settings.concurrency).",
)
@click.option("--merge", "merge", is_flag=True, help="Run the merge worker (one at a time).")
@click.option(
    "-n",
    "--name",
    "node",
    default=None,
    metavar="NODE",
    help="Celery node name, e.g. cw-agents-1@%h (default: cw-<queue>-<pid>@%h).",
)
@_loglevel
def worker(concurrency: int | None, merge: bool, node: str | None, loglevel: str) -> NoReturn:
    """Start a worker in this terminal; start more anywhere to add capacity."""
    settings = load_settings().require_database()
    if not merge:
        make_adapter(settings)  # an agent that cannot run here: now, not in every task it takes
    else:
        refuse_checked_out_integration(settings)
    broker.broker_url(settings)  # start the embedded broker before Celery connects
    if merge:
        _recover_merges(settings)
    queue = defaults.MERGE_QUEUE if merge else defaults.AGENTS_QUEUE
    count = 1 if merge else (concurrency or settings.concurrency)
    _exec(worker_argv(queue, count, node or f"cw-{queue}-{os.getpid()}@%h", loglevel), settings)


@click.command()
@_loglevel
def beat(loglevel: str) -> NoReturn:
    """Start the periodic reconciler (dispatches whatever is ready, every few seconds)."""
    settings = load_settings().require_database()
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


@click.command()
@click.option("--show-credentials", is_flag=True, help="Print user:password and exit.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port (default: settings.flower_port).",
)
@click.option(
    "--address",
    default=monitoring.FLOWER_ADDRESS,
    show_default=True,
    help="Address to listen on; 0.0.0.0 in a container.",
)
def flower(show_credentials: bool, port: int | None, address: str) -> None:
    """Start Flower (Celery monitoring) behind a password.

    The password is FLOWER_BASIC_AUTH (user:password) when set, else one generated and kept in
    .cw/flower.credentials.
    """
    settings = load_settings()
    if not (settings.broker_url and os.environ.get(monitoring.FLOWER_AUTH_VARIABLE)):
        settings.require_initialized()  # for the embedded broker or the generated password
    user, password = monitoring.flower_credentials(settings, os.environ)
    if show_credentials:
        click.echo(f"{user}:{password}")
        return
    port = port or settings.flower_port
    check_port_free(address, port, "set CW_FLOWER_PORT or pass --port")
    if address not in ("127.0.0.1", "::1", "localhost"):
        click.echo(
            f"cw: warning: Flower's /metrics answers without the password; on {address} anyone "
            "who reaches the port reads it (docs/server.md: a local scrape, or a proxy)",
            err=True,
        )
    broker.broker_url(settings)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "flower",
        f"--address={address}",
        f"--port={port}",
    ]
    # In .cw/ (or /, in a container without the repository): Flower reads ./flowerconfig.py,
    # never the repository's. The password goes in the environment, not on a command line
    # anyone can read with ps.
    os.chdir(settings.state_dir if settings.initialized else "/")
    _exec(argv, settings, {"FLOWER_BASIC_AUTH": f"{user}:{password}"})


def refuse_checked_out_integration(settings: Settings) -> None:
    """A merge worker never starts to move an integration branch a working tree has checked
    out (set so in config.toml or CW_INTEGRATION_BRANCH; `cw init` refuses it)."""
    branch = settings.integration_branch
    holder = branches.checked_out_in(settings.repo, branch)
    if holder is not None:
        raise UsageError(": ".join(branches.integration_checked_out(branch, holder)))


def _recover_merges(settings: Settings) -> None:
    """A merge worker that died half-way left its merge begun: send it again."""
    store = Store.open(settings.db_url)
    resent = send_merges(make_app(settings), stuck_merges(settings, store))
    store.close()
    if resent:
        click.echo(f"cw: re-sent {resent} merge(s) a previous merge worker left unfinished")


def _exec(argv: list[str], settings: Settings, extra: dict[str, str] | None = None) -> NoReturn:
    env = {**os.environ, **settings.child_env(), **(extra or {})}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


@click.group("broker")
def broker_group() -> None:
    """The embedded broker (a private Redis under .cw/), when CW_BROKER_URL is not set."""


@broker_group.command("start")
def broker_start() -> None:
    """Start it (any command that needs it does this by itself)."""
    settings = load_settings().require_initialized()
    if not _said_external(settings, "CW_BROKER_URL: not cw's to start"):
        click.echo(broker.broker_url(settings))


@broker_group.command("stop")
def broker_stop() -> None:
    """Stop it; queued messages are kept in its append-only file under .cw/."""
    stopped = broker.stop_embedded(load_settings().require_initialized())
    click.echo("cw: broker stopped" if stopped else "cw: broker was not running")


@broker_group.command("status")
def broker_status() -> None:
    """Whether the broker runs (an external one: whether it answers)."""
    settings = load_settings().require_initialized()
    if not _said_external(settings, "running: it answers"):
        said = "running" if broker.embedded_running(settings) else "stopped"
        click.echo(f"{broker.broker_url(settings, start=False)} ({said})")


def _said_external(settings: Settings, said: str) -> bool:
    """With CW_BROKER_URL set, print its (masked) address and ``said`` once it answers
    (:class:`BrokerError` in one line otherwise): an external broker is not cw's to run."""
    if not settings.broker_url:
        return False
    connected_app(settings)
    click.echo(f"{mask_password(settings.broker_url)} ({said})")
    return True
