"""The garbage collector around a command: paused while modules load, on while a command runs
(long-running ones make cycles for days), paused again for a submit's bounded work."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from cw.cli import cli
from cw.cli.common import gc_paused


@pytest.fixture
def collector_off() -> Iterator[None]:
    """As cw/__main__.py leaves it when a command starts to load."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_command_runs_with_the_collector_on(collector_off: None) -> None:
    seen: list[bool] = []

    @click.command()
    def probe() -> None:
        seen.append(gc.isenabled())

    cli.add_command(probe)
    try:
        result = CliRunner().invoke(cli, ["probe"])
    finally:
        cli.commands.pop("probe")
    assert result.exit_code == 0, result.output
    assert seen == [True]


def test_a_paused_piece_of_work_turns_it_back_on_even_when_it_fails() -> None:
    @gc_paused()
    def work(fail: bool) -> bool:
        if fail:
            raise RuntimeError("boom")
        return gc.isenabled()

    assert work(False) is False
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        work(True)
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_installed_command_leaves_it_on_for_a_long_running_command() -> None:
    """``cw`` as a user starts it: the process's collector is on once the command runs."""
    probe = (
        "import gc, sys, click; from cw import cli; from cw.__main__ import run\n"
        "cli.cli.add_command(click.command('probe')(lambda: print(gc.isenabled())))\n"
        "sys.argv = ['cw', 'probe']; run()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
