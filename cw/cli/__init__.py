"""The ``cw`` command: every user-facing entry point (INFRA-01).

Subcommands are loaded on first use (click's lazy-loading pattern), so ``cw --version`` and
``cw status`` do not pay for importing Celery, git or the plan parsers.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from cw import __version__
from cw.errors import CwError, UsageError


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
        except CwError as exc:
            click.echo(f"cw: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(
    cls=LazyGroup,
    lazy={
        "init": "cw.cli.run:init",
        "submit": "cw.cli.submit:submit",
        "dispatch": "cw.cli.run:dispatch",
        "status": "cw.cli.show:status",
        "wait": "cw.cli.show:wait",
        "task": "cw.cli:task",
        "plan": "cw.cli.plans:plan",
        "agent": "cw.cli:agent",
        "worker": "cw.cli.services:worker",
        "budget": "cw.cli:budget",
        "limits": "cw.cli:limits",
        "review": "cw.cli:review",
        "gc": "cw.cli.maintenance:gc",
        "doctor": "cw.cli.maintenance:doctor",
        "merge": "cw.cli.maintenance:merge",
        "beat": "cw.cli.services:beat",
        "broker": "cw.cli.services:broker_group",
        "message": "cw.cli.messages:message",
        "fsui": "cw.cli.fsui:fsui",
        "server": "cw.cli.server:server",
        "flower": "cw.cli.services:flower",
        "web": "cw.cli.web:web",
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
    lazy={
        "list": "cw.cli.show:task_list",
        "show": "cw.cli.show:task_show",
        "retry": "cw.cli.run:task_retry",
        "cancel": "cw.cli.run:task_cancel",
        "diff": "cw.cli.show:task_diff",
    },
)
def task() -> None:
    """Tasks: list, show, diff, retry, cancel."""


@click.group(
    cls=LazyGroup,
    lazy={
        "list": "cw.cli.show:agent_list",
        "spawn": "cw.cli.agents:spawn",
        "stop": "cw.cli.agents:stop",
        "resume": "cw.cli.agents:resume",
        "restart": "cw.cli.agents:restart",
        "logs": "cw.cli.agents:logs",
    },
)
def agent() -> None:
    """Agents: list, spawn, stop, resume, restart, logs."""


@click.group(
    cls=LazyGroup, lazy={"set": "cw.cli.run:budget_set", "list": "cw.cli.show:budget_list"}
)
def budget() -> None:
    """Cost limits per plan or initiative: no new work starts there once spent."""


@click.group(
    cls=LazyGroup, lazy={"list": "cw.cli.show:limits_list", "resume": "cw.cli.run:limits_resume"}
)
def limits() -> None:
    """Usage limits: one agent hitting its account's limit pauses new starts for all."""


@click.group(
    cls=LazyGroup,
    lazy={
        "list": "cw.cli.review:review_list",
        "show": "cw.cli.review:review_show",
        "approve": "cw.cli.review:review_approve",
        "reject": "cw.cli.review:review_reject",
        "mode": "cw.cli.review:review_mode",
    },
)
def review() -> None:
    """Review before merge: list, show, approve, reject; a plan's review mode."""


def main() -> None:
    """Run ``cw``; a usage mistake click catches is one line too, like every other error."""
    try:
        code = cli.main(prog_name="cw", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"cw: error: {_where(exc)}{exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("cw: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _where(exc: click.ClickException) -> str:
    """The subcommand a usage mistake is in ("cw worker: "); nothing for the root command."""
    ctx = exc.ctx if isinstance(exc, click.UsageError) else None
    return f"{ctx.command_path}: " if ctx is not None and ctx.parent is not None else ""
