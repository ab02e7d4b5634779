"""The ``cw`` command: every user-facing entry point (INFRA-01).

Subcommands are loaded on first use (click's lazy-loading pattern), so ``cw --version`` and
``cw status`` do not pay for importing Celery, git or the plan parsers.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from typing import Any

import click

from cw import __version__
from cw.defaults import AGENT_RUN_ENV, DATABASE_FILE, SERVER_PID_ENV
from cw.errors import CwError, NotSent, UsageError


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules, named ``"module:attribute"``."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        # Every CwError becomes one line on stderr and its exit code, never a traceback.
        try:
            return super().invoke(ctx)
        except NotSent as exc:  # the action is done: only sending what it lets start waits
            click.echo(f"cw: done, but not sent yet: {exc}; `cw beat` sends it later", err=True)
            ctx.exit(0)
        except CwError as exc:
            click.echo(f"cw: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            said = _database_failure(exc)
            if said is None:
                raise
            click.echo(f"cw: error: {said}", err=True)
            ctx.exit(2)


def _database_failure(exc: Exception) -> str | None:
    """One line for a database that cannot be used (damaged, read-only, of an unknown
    schema, unreachable), as the database said it; None for anything else."""
    import sqlite3

    origin = type(exc).__module__.split(".")[0]
    if isinstance(exc, sqlite3.Error):
        reason = str(exc)
    elif origin == "sqlalchemy" and getattr(exc, "orig", None) is not None:
        reason = str(getattr(exc, "orig", ""))
    elif origin == "alembic":
        reason = f"{exc} (a schema this cw does not know: a newer cw's?)"
    else:
        return None
    return f"the district's database ({_database_named()}): {reason.strip().splitlines()[0]}"


def _database_named() -> str:
    """The SQLite file, or which server (never its URL: it may hold a password)."""
    from cw.settings import Settings

    try:
        settings = Settings.load()
    except CwError:
        return "see `cw doctor`"
    if settings.database_url:
        return settings.database_url.partition(":")[0]
    return str(settings.state_dir / DATABASE_FILE)


def _from(module: str, *names: str, prefix: str = "") -> dict[str, str]:
    """Subcommands found in ``cw.cli.<module>``: each name's function is ``<prefix><name>``."""
    where = f"cw.cli.{module}".rstrip(".")  # "": the groups of this module
    return {name: f"{where}:{prefix}{name}" for name in names}


@click.group(
    cls=LazyGroup,
    lazy={
        **_from("", "task", "agent", "budget", "limits", "review"),
        **_from("run", "init", "dispatch"),
        **_from("show", "status", "wait"),
        **_from("maintenance", "gc", "doctor", "merge"),
        **_from("services", "worker", "beat", "flower"),
        "broker": "cw.cli.services:broker_group",
        "plan": "cw.cli.plans:plan",
        "message": "cw.cli.messages:message",
        **{name: f"cw.cli.{name}:{name}" for name in ("submit", "fsui", "server", "web")},
    },
    invoke_without_command=True,
    no_args_is_help=True,
)
@click.version_option(__version__, prog_name="cw")
@click.option("-v", "--verbose", is_flag=True, help="Log what cw does to stderr.")
@click.option("--server", "server_mode", is_flag=True, help="Run the district: `cw server start`.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, server_mode: bool) -> None:
    """cw (Codewalk District): many coding agents on one repository, merged in order."""
    gc.enable()  # paused while the modules loaded (cw/__main__.py)
    supervisor = os.environ.pop(SERVER_PID_ENV, "")  # not for what this command starts
    if supervisor.isascii() and supervisor.isdigit():
        from cw.host import processes  # a child of `cw server`: it ends with the server

        processes.die_with_parent(int(supervisor))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if not server_mode:
        if ctx.invoked_subcommand is None:
            raise click.UsageError("Missing command.")
        return
    if ctx.invoked_subcommand is not None:
        raise UsageError("--server takes no command: use `cw server ...` for more")
    server = cli.get_command(ctx, "server")
    assert isinstance(server, click.Group)
    ctx.invoke(server.commands["start"])


@click.group(
    cls=LazyGroup,
    lazy=_from("show", "list", "show", "diff", prefix="task_")
    | _from("run", "retry", "cancel", prefix="task_"),
)
def task() -> None:
    """Tasks: list, show, diff, retry, cancel."""


@click.group(
    cls=LazyGroup,
    lazy=_from("show", "list", prefix="agent_")
    | _from("agents", "spawn", "stop", "resume", "restart", "logs"),
)
def agent() -> None:
    """Agents: list, spawn, stop, resume, restart, logs."""


@click.group(
    cls=LazyGroup,
    lazy=_from("run", "set", "remove", prefix="budget_") | _from("show", "list", prefix="budget_"),
)
def budget() -> None:
    """Cost limits per plan or initiative: no new work starts there once spent."""


@click.group(
    cls=LazyGroup,
    lazy=_from("show", "list", prefix="limits_") | _from("run", "resume", prefix="limits_"),
)
def limits() -> None:
    """Usage limits: one agent hitting its account's limit pauses new starts for all."""


@click.group(
    cls=LazyGroup,
    lazy=_from("review", "list", "show", "approve", "reject", "mode", prefix="review_"),
)
def review() -> None:
    """Review before merge: list, show, approve, reject; a plan's review mode."""


def main() -> None:
    """Run ``cw``; a usage mistake click catches is one line too, like every other error."""
    os.environ.pop(AGENT_RUN_ENV, None)  # run by an agent: nothing cw starts is that agent
    _refuse_undecodable(sys.argv[1:])
    try:
        code = cli.main(prog_name="cw", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `cw`, `cw task`: asked for help
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(0)
    except click.ClickException as exc:
        where = _where(exc) if getattr(exc, "ctx", None) else _named(sys.argv[1:])
        click.echo(f"cw: error: {where}{exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("cw: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _refuse_undecodable(args: list[str]) -> None:
    """Names, keys, answers and paths reach the database and the logs as UTF-8 text: an
    argument that is not (Python keeps its bytes as surrogates) is one line, not a trace."""
    for number, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            click.echo(f"cw: error: argument {number} ({shown}) is not UTF-8 text", err=True)
            sys.exit(2)


def _where(exc: click.ClickException) -> str:
    """The subcommand a usage mistake is in ("cw worker: "); nothing for the root command."""
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    return f"{ctx.command_path}: " if ctx is not None and ctx.parent is not None else ""


def _named(args: list[str]) -> str:
    """The subcommand the command line names ("cw task list: "), for a mistake click reports
    without its context (an option missing its value); nothing for the root command."""
    command: click.Command = cli
    path = ["cw"]
    ctx = click.Context(cli)
    for arg in args:
        if arg.startswith("-"):
            continue  # a group's own flag (-v, --server)
        found = command.get_command(ctx, arg) if isinstance(command, click.Group) else None
        if found is None:
            break
        command, path = found, [*path, arg]
    return f"{' '.join(path)}: " if len(path) > 1 else ""
