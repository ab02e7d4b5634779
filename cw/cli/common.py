"""Helpers every command module shares (light imports only)."""

from __future__ import annotations

import errno
import functools
import gc
import json
import math
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import fields, is_dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cw.defaults import MAX_ROW_ID, MAX_TOKENS
from cw.errors import UsageError
from cw.host.stopflag import StopFlag
from cw.settings import Settings

if TYPE_CHECKING:
    from cw.store import Store
    from cw.store.selects import Listings

T = TypeVar("T")
C = TypeVar("C", bound=Callable[..., Any])


@contextmanager
def until_ctrl_c() -> Iterator[StopFlag]:
    """A flag Ctrl-C sets, for a command that loops until then: its loop checks the flag
    (and waits on it) instead of counting on KeyboardInterrupt, which the default handler
    raises wherever the main thread is, a finalizer included, where it is lost."""
    stop = StopFlag()
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
        stop.close()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused for one bounded piece of work that makes many
    objects and keeps most of them: a submit reads thousands of plans and rows, and each full
    collection walks them all again (a sixth of a re-submit of 5,000 tasks, measured). What
    is no longer referenced is still freed at once; a cycle waits for the next collection.
    Also a decorator. Not for a command that loops until stopped."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_settings() -> Settings:
    return Settings.load()


def open_store(settings: Settings) -> Store:
    from cw.store import Store  # SQLAlchemy: only for commands that read or write the store

    return Store.open(settings.require_database().db_url)


#: A command on one task: given the open district, the task's id, what the command line named
#: it by, then the command's own options.
OnTask = Callable[..., None]


def task_command(name: str) -> Callable[[OnTask], click.Command]:
    """The command ``name`` on the task its argument REF names (an id or a key)."""
    return _on_task(name, "ref", lambda store, ref: store.find_task_id(ref))


def agent_command(name: str) -> Callable[[OnTask], click.Command]:
    """The command ``name`` on the task of the agent its argument NAME names."""
    return _on_task(name, "name", lambda store, agent: store.agent_task_id(agent))


def _on_task(
    name: str, argument: str, find: Callable[[Store, str], int]
) -> Callable[[OnTask], click.Command]:
    """The command ``name``: its argument ``argument``, the task ``find`` finds for it."""

    def decorate(on_task: OnTask) -> click.Command:
        @functools.wraps(on_task)  # its help, and the options decorating it
        def command(**options: Any) -> None:
            from cw.district import District  # the store and git: only for commands on tasks

            district = District.open(load_settings())
            given = options.pop(argument)
            on_task(district, find(district.store, given), given, **options)

        return click.command(name)(click.argument(argument)(command))

    return decorate


@contextmanager
def open_listings(settings: Settings) -> Iterator[Listings]:
    """What the listings read, as one snapshot of the district: a SQLite district through
    ``sqlite3`` alone when it can (see :mod:`cw.store.glance`), else one read of the store."""
    from cw.store.selects import Glance

    glance = Glance.open(settings.require_database().db_url)
    if glance is not None:
        with closing(glance):
            yield glance
        return
    with open_store(settings).listing() as listings:
        yield listings


def read_listings(settings: Settings, read: Callable[[Listings], T]) -> T:
    """What ``read`` makes of one snapshot of the district (:func:`open_listings`)."""
    with open_listings(settings) as listings:
        return read(listings)


def emit_json(data: Any) -> None:
    """``data`` as JSON, read rows (dataclasses) as objects of their fields: indented for a
    terminal, on one line for a pipe or a file (json's C encoder: a listing of 10,000 tasks is a
    megabyte, and the indenting encoder is pure Python)."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=_plain))


def show(data: T, as_json: bool, human: Callable[[T], object]) -> None:
    """``data`` as JSON with ``--json``, else as ``human`` writes it for people."""
    if as_json:
        emit_json(data)
    else:
        human(data)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {name: getattr(value, name) for name in _field_names(type(value))}
    return str(value)


@functools.cache
def _field_names(kind: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(kind))


def counted(n: int, noun: str) -> str:
    """``1 plan``, ``3 plans``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: Suffixes of a token count: ``2M`` is two million.
_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


class Finite(click.FloatRange):
    """A number of seconds or dollars: in range, and neither nan nor infinite (a plain
    FloatRange lets both through: every comparison with nan is false, and inf has no max)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number == 0 and isinstance(value, str) and _nonzero(value):
            self.fail(f"{value!r} is too small to tell from 0", param, ctx)
        return number


def _nonzero(text: str) -> bool:
    """Whether ``text`` writes a number other than 0 (``1e-400`` does, though it reads as 0.0)."""
    try:
        return Decimal(text.strip()) != 0
    except ArithmeticError:
        return False


#: A cap in dollars no budget needs more than (one more digit prints as a wall of them).
MAX_USD = 1e9


def timeout_option(default: float, help: str | None = None) -> Callable[[C], C]:
    """``--timeout``: the seconds a command waits (finite, at least 0), its default shown."""
    return click.option(
        "--timeout", type=Finite(min=0), default=default, show_default=True, help=help
    )


#: A message's or a row's id on the command line: a whole number a database column holds.
ROW_ID = click.IntRange(1, MAX_ROW_ID)


def token_count(text: str, what: str) -> int:
    """``2M``, ``500k``, ``1.5m`` or ``2000000`` as a whole number of tokens; anything else is
    one clear line naming ``what``."""
    number, suffix = text.strip(), ""
    if number[-1:].lower() in ("k", "m", "g"):
        number, suffix = number[:-1], number[-1].lower()
    try:  # exact: 1e-400 is not 0 tokens, as a float would have it
        value = Decimal(number) * _MULTIPLIERS[suffix]
    except ArithmeticError:
        value = Decimal(-1)
    if not (value.is_finite() and value >= 0):
        raise UsageError(f"{what}: {text!r} is no token count (e.g. 2M, 500k, 1500000)")
    if value > MAX_TOKENS:
        raise UsageError(f"{what}: {text!r} is more than a budget holds ({MAX_TOKENS:,} tokens)")
    if value != int(value):  # 0.4 tokens would be stored as 0: a spent budget
        raise UsageError(f"{what}: {text!r} is not a whole number of tokens")
    return int(value)


def check_port_free(address: str, port: int, fix: str) -> None:
    """One line, before anything starts, when ``port`` cannot be listened on; ``fix`` says
    how to choose another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise UsageError(
                    f"cannot listen on {address} ({exc.strerror}): pass another --address"
                ) from exc
            raise UsageError(f"port {port} on {address} is taken ({exc.strerror}): {fix}") from exc
