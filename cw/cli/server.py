"""``cw server``: the whole district in one command, in the foreground or detached."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from cw.agents.registry import make_adapter
from cw.cli.common import check_port_free, load_settings, show, timeout_option
from cw.cli.services import refuse_checked_out_integration
from cw.errors import UsageError
from cw.host import pidfile, processes
from cw.service import serverctl
from cw.service.serverctl import ServerHealth
from cw.settings import Settings

if TYPE_CHECKING:
    from cw.service.server import ServerOptions

F = Callable[..., Any]


_START_OPTIONS = (
    click.option(
        "-d", "--detach", is_flag=True, help="Run in the background; log to .cw/logs/server.log."
    ),
    click.option(
        "-w",
        "--workers",
        type=click.IntRange(1, 256),
        default=None,
        help="Agent processes (default: settings.concurrency).",
    ),
    click.option("--no-flower", is_flag=True, help="Without Flower."),
    click.option("--no-fsui", is_flag=True, help="Without the file-system UI watcher."),
    click.option("--no-web", is_flag=True, help="Without the district's web page (cw web)."),
)


def _start_options(command: F) -> F:
    for option in reversed(_START_OPTIONS):
        command = option(command)
    return command


@click.group(invoke_without_command=True)
@_start_options
@click.pass_context
def server(ctx: click.Context, /, **options: Any) -> None:
    """Run the district: workers, merge worker, beat, watcher, Flower (`cw server` = start)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(start, **options)
    elif any(options.values()):
        raise UsageError(
            "--detach, --workers, --no-flower, --no-fsui and --no-web go with "
            f"`cw server [start]`, not with `cw server {ctx.invoked_subcommand}`"
        )


@server.command()
@_start_options
def start(detach: bool, workers: int | None, no_flower: bool, no_fsui: bool, no_web: bool) -> None:
    """Start everything; SIGTERM or Ctrl-C stops it cleanly (twice: at once)."""
    from cw.service import server as district  # Celery and the store: not for `cw server stop`

    settings = load_settings().require_database()
    make_adapter(settings)  # its agent workers could run no task: say so before starting them
    refuse_checked_out_integration(settings)  # nor its merge worker
    options = district.ServerOptions(
        workers=workers, flower=not no_flower, fsui=not no_fsui, web=not no_web
    )
    if pidfile.holder(serverctl.pid_path(settings)) is None:  # a running one holds them itself
        _check_ports(settings, options)
    if detach:
        pid = district.start_detached(settings, options)
        click.echo(
            f"cw: server started (pid {pid}); `cw server status`, `cw server stop`; "
            f"log: {settings.log_dir / district.LOG_FILE}"
        )
        return
    _log_to_stderr()
    processes.exit_now(district.serve(settings, options))  # everything it started is gone


@server.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Is the server running, and is each part of it healthy? Exit 1 if not."""
    from cw.service import server as district

    report = district.health(load_settings().require_initialized())
    show(report, as_json, _render)
    if not report.healthy:
        sys.exit(1)


@server.command()
@timeout_option(900.0, "Seconds to wait for it to stop.")
@click.option("--force", is_flag=True, help="Signal twice: kill every child now.")
def stop(timeout: float, force: bool) -> None:
    """Stop the running server: agents interrupted (their work committed), children stopped."""
    pid = serverctl.stop_server(load_settings().require_initialized(), timeout=timeout, force=force)
    click.echo("cw: no server was running" if pid is None else f"cw: server (pid {pid}) stopped")


def _render(report: ServerHealth) -> None:
    if not report.running:
        click.echo("server: not running")
    else:
        click.echo(f"server: running (pid {report.pid})")
    for name, child in report.children.items():
        alive = "alive" if child.alive else "DEAD"
        click.echo(f"  {name:<8} pid {child.pid:<8} {alive:<6} log: {child.log}")
    click.echo(f"broker: {'reachable' if report.broker else 'NOT reachable'}")
    click.echo(f"database: {'reachable' if report.database else 'NOT reachable'}")
    if report.web:
        click.echo(f"web: {report.web}")
    if report.flower:
        click.echo(
            f"flower: {report.flower} (credentials: {report.flower_credentials}, "
            "or `cw flower --show-credentials`)"
        )


def _log_to_stderr() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s cw server: %(message)s", "%H:%M:%S"))
    log = logging.getLogger("cw.service.server")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _check_ports(settings: Settings, options: ServerOptions) -> None:
    """A port the page or Flower cannot have: said now, not as a child that exits again and
    again behind a server that said it started."""
    if options.web:
        check_port_free("127.0.0.1", settings.web_port, "set web_port, or pass --no-web")
    if options.flower:
        check_port_free("127.0.0.1", settings.flower_port, "set flower_port, or pass --no-flower")
