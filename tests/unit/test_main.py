"""``cw`` itself (cw/__main__.py): what happens before any command runs."""

from __future__ import annotations

import gc

import pytest

import cw.cli
from cw import __main__


def interrupted() -> None:
    raise KeyboardInterrupt


def test_ctrl_c_while_the_command_loads_is_one_line_and_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["cw", "status"])
    monkeypatch.setattr(cw.cli, "main", interrupted)  # as if Ctrl-C came while it imported
    try:
        with pytest.raises(SystemExit) as ended:
            __main__.run()
    finally:
        gc.enable()  # run() pauses the collector for the command's imports
    assert ended.value.code == 130
    assert capsys.readouterr().err == "cw: interrupted\n"
