"""Agent lifecycle: spawn, stop, resume, restart, logs (AGENT-01..04, INFRA-03)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from cw import transcript
from cw.celeryapp import make_app
from cw.cli.common import load_settings, open_store
from cw.dispatch import dispatch_ready, send
from cw.errors import CwError
from cw.settings import Settings
from cw.states import TaskState
from cw.store import Store

STOP_POLL_SECONDS = 0.2


@click.command("spawn")
@click.option("--task", "task_ref", required=True, help="Task id or key.")
def spawn(task_ref: str) -> None:
    """Assign an agent to a ready task and start it now."""
    settings = load_settings()
    store = open_store(settings)
    task_id = store.find_task_id(task_ref)
    store.make_ready(task_id)
    claim = store.claim_task(task_id)
    send(make_app(settings), [claim])
    click.echo(f"cw: agent {store.agent_of(task_id)} started on task {task_ref} "
               f"(attempt {claim.attempt})")  # fmt: skip


@click.command("stop")
@click.argument("name")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the agent to stop.")  # fmt: skip
def stop(name: str, timeout: float) -> None:
    """Stop an agent: its work is committed on its branch and its worktree removed."""
    settings = load_settings()
    store = open_store(settings)
    task_id = store.agent_task_id(name)
    stop_and_wait(settings, store, task_id, timeout)
    click.echo(f"cw: agent {name} stopped; its work is on its branch. "
               f"Continue it with `cw agent resume {name}`")  # fmt: skip


def stop_and_wait(settings: Settings, store: Store, task_id: int, timeout: float) -> None:
    state, host, pid = store.request_stop(task_id)
    if state == TaskState.STOPPED:
        return
    if host == settings.hostname and pid:
        # Same machine: signal at once instead of waiting for the worker's next heartbeat.
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    while (state := store.task_state(task_id)) == TaskState.RUNNING:
        if time.monotonic() > deadline:
            raise CwError(f"the agent did not stop within {timeout:.0f} s; it is still asked to")
        time.sleep(STOP_POLL_SECONDS)
    if state != TaskState.STOPPED:
        click.echo(f"cw: the agent finished before it could stop: its task is {state.value}")


@click.command("resume")
@click.argument("name")
def resume(name: str) -> None:
    """Continue a stopped (or failed) agent in its own session and worktree."""
    settings = load_settings()
    store = open_store(settings)
    _resume(settings, store, store.agent_task_id(name))
    click.echo(f"cw: agent {name} resumes")


def _resume(settings: Settings, store: Store, task_id: int) -> None:
    if store.task_state(task_id) == TaskState.FAILED:
        store.retry_task(task_id)
    else:
        store.resume_task(task_id)
    dispatch_ready(store, make_app(settings))


@click.command("restart")
@click.argument("name")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def restart(name: str, timeout: float) -> None:
    """Stop an agent if it runs, then resume it in the same session."""
    settings = load_settings()
    store = open_store(settings)
    task_id = store.agent_task_id(name)
    if store.task_state(task_id) in (TaskState.RUNNING, TaskState.QUEUED):
        stop_and_wait(settings, store, task_id, timeout)
    _resume(settings, store, task_id)
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
    if not events.exists():
        _print_outputs(log_dir)
        return
    for line in _lines(events, follow, lambda: _settled(store, name)):
        if raw:
            click.echo(line)
        else:
            for text in transcript.render([line]):
                click.echo(text)


def _settled(store: Store, name: str) -> bool:
    return store.task_state(store.agent_task_id(name)) != TaskState.RUNNING


def _lines(path: Path, follow: bool, settled: Callable[[], bool]) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        while True:
            line = handle.readline()
            if line:
                yield line.rstrip("\n")
            elif not follow or settled():
                return
            else:
                time.sleep(STOP_POLL_SECONDS)


def _print_outputs(log_dir: Path) -> None:
    if not log_dir.is_dir():
        click.echo("cw: no output yet")
        return
    for path in sorted(log_dir.glob("attempt-*")):
        click.echo(f"=== {path.name}")
        click.echo(path.read_text(errors="replace"), nl=False)
