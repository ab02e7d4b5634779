"""``cw fsui``: the district as files a person can read and edit (docs/file-ui.md)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import click

from cw.cli.common import load_settings
from cw.fsui import place, watcher
from cw.settings import Settings
from cw.store import Store
from cw.transport.celeryapp import make_app
from cw.transport.dispatch import dispatch_ready


@click.command()
@click.option("--once", is_flag=True, help="Write the files and apply pending edits, then exit.")
def fsui(once: bool) -> None:
    """Mirror tasks, agents and messages as Markdown files, and apply a person's edits."""
    settings = load_settings().require_database()
    root = place.mirror_root(settings)
    if once:
        _once(settings)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopper(stop))
    watcher.run(
        settings,
        stop,
        dispatch=_dispatcher(settings),
        ready=lambda w: click.echo(f"cw: mirroring into {root} (Ctrl-C to stop)"),
    )
    click.echo("cw: fsui stopped")


def _once(settings: Settings) -> None:
    """One pass; each edit not applied is one line saying why (the watcher's own log line
    about it is left out), and then the exit code is 2."""
    quiet = logging.getLogger(watcher.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        w = watcher.once(settings, _dispatcher(settings))
    finally:
        quiet.setLevel(level)
    for line in w.tally.applied:
        click.echo(f"cw: applied {line}")
    click.echo(f"cw: {w.dir.root}: {w.tally.written} file(s) written")
    for rel, why, kept in w.tally.kept:
        click.echo(f"cw: error: {rel}: not applied: {why}; kept as {kept.name}", err=True)
    if w.tally.kept:
        raise SystemExit(2)


def _dispatcher(settings: Settings) -> Callable[[Store], Callable[[], object]]:
    """After an answer or a retry: send whatever became ready, like the CLI commands do."""

    def make(store: Store) -> Callable[[], object]:
        app = make_app(settings)
        return lambda: dispatch_ready(store, app, settings)

    return make


def _stopper(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    return handler
