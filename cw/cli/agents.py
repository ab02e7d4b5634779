"""Agent lifecycle: spawn, stop, resume, restart, logs (AGENT-01..04, INFRA-03)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import click

from cw.agents import transcript
from cw.cli.common import agent_command, load_settings, open_store, timeout_option, until_ctrl_c
from cw.district import District
from cw.host.stopflag import StopFlag
from cw.states import TaskState
from cw.store import Store

STOP_POLL_SECONDS = 0.2


@click.command("spawn")
@click.option("--task", "task_ref", required=True, help="Task id or key.")
def spawn(task_ref: str) -> None:
    """Assign an agent to a ready task and start it now."""
    district = District.open(load_settings())
    task_id = district.store.find_task_id(task_ref)
    claim = district.spawn(task_id)
    click.echo(
        f"cw: agent {district.store.agent_of(task_id)} started on task {task_ref} "
        f"(attempt {claim.attempt})"
    )


@agent_command("stop")
@timeout_option(60.0, "Seconds to wait for the agent to stop.")
def stop(district: District, task_id: int, name: str, timeout: float) -> None:
    """Stop an agent: its work is committed on its branch and its worktree removed."""
    before = district.store.task_state(task_id)
    state = district.stop(task_id, timeout)
    if state != TaskState.STOPPED:
        _say_stopped(state)
        return
    if before == TaskState.QUEUED:  # sent to a worker, never started
        click.echo(
            f"cw: agent {name} stopped before it started. Send it with `cw agent resume {name}`"
        )
        return
    click.echo(
        f"cw: agent {name} stopped; its work is on its branch. "
        f"Continue it with `cw agent resume {name}`"
    )


def _say_stopped(state: TaskState | None) -> None:
    if state not in (None, TaskState.STOPPED):
        click.echo(f"cw: the agent finished before it could stop: its task is {state.value}")


@agent_command("resume")
def resume(district: District, task_id: int, name: str) -> None:
    """Continue a stopped (or failed) agent in its own session and worktree."""
    district.resume(task_id)
    click.echo(f"cw: agent {name} resumes")


@agent_command("restart")
@timeout_option(60.0)
def restart(district: District, task_id: int, name: str, timeout: float) -> None:
    """Stop an agent if it runs, then resume it in the same session."""
    _say_stopped(district.restart(task_id, timeout))
    click.echo(f"cw: agent {name} restarted")


@click.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the agent works.")
@click.option("--raw", is_flag=True, help="The raw events, one JSON object per line.")
def logs(name: str, follow: bool, raw: bool) -> None:
    """What an agent did: a readable transcript (Claude Code) or its output (command)."""
    settings = load_settings()
    store = open_store(settings)
    log_dir = settings.log_dir / "agents" / name
    store.agent_task_id(name)  # a clear error for an unknown name
    events = log_dir / "events.jsonl"
    settled = partial(_settled, store, name)
    with until_ctrl_c() as stop:
        if follow:  # a running agent's logs may not exist yet: its worker is starting it
            _await_output(log_dir, settled, stop)
        if not events.exists():
            _print_outputs(log_dir, follow, settled, stop)
            return
        for line in _lines(events, follow, settled, stop):
            if raw:
                click.echo(line)
            else:
                for text in transcript.render([line]):
                    click.echo(text)


def _settled(store: Store, name: str) -> bool:
    return store.task_state(store.agent_task_id(name)) != TaskState.RUNNING


def _await_output(log_dir: Path, settled: Callable[[], bool], stop: StopFlag) -> None:
    """Until the agent has an event stream or an attempt's stdout, or settles (or Ctrl-C)."""
    while not stop.is_set() and not settled():
        if (log_dir / "events.jsonl").exists() or any(log_dir.glob("attempt-*.stdout")):
            return
        stop.wait(STOP_POLL_SECONDS)


def _lines(path: Path, follow: bool, settled: Callable[[], bool], stop: StopFlag) -> Iterator[str]:
    """The file's lines; with ``follow``, new ones too until ``settled`` (or Ctrl-C)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        while True:
            line = handle.readline()
            if line:
                yield line.rstrip("\n")
            elif not follow or stop.is_set():
                return
            elif settled():  # what the agent wrote before it settled, then no more
                yield from (rest.rstrip("\n") for rest in handle)
                return
            else:
                stop.wait(STOP_POLL_SECONDS)


def _print_outputs(
    log_dir: Path, follow: bool, settled: Callable[[], bool], stop: StopFlag
) -> None:
    """An agent's output without an event stream (the command adapter): each attempt's stderr
    and stdout in order; with ``follow``, the last stdout as it grows, until it settles."""
    if not log_dir.is_dir():
        click.echo("cw: no output yet")
        return
    paths = sorted(log_dir.glob("attempt-*.std*"), key=_attempt_order)
    for path in paths:
        click.echo(f"=== {path.name}")
        if follow and path == paths[-1]:
            for line in _lines(path, True, settled, stop):
                click.echo(line)
        else:
            click.echo(path.read_text(errors="replace"), nl=False)


def _attempt_order(path: Path) -> tuple[int, str]:
    """``attempt-10.stdout`` after ``attempt-9.stdout``; stderr before stdout."""
    number, _, stream = path.name.removeprefix("attempt-").partition(".")
    return (int(number) if number.isascii() and number.isdigit() else 0), stream
