"""workers/control.py: the control worker is named after its merge worker and known by pid."""

from __future__ import annotations

import os
import threading

import psutil
import pytest

from cw import defaults
from cw.errors import CwError
from workers import forked, serves
from workers.control import _argv, fork_control_worker


def test_the_control_worker_is_named_after_its_merge_worker_and_runs_one_thread() -> None:
    argv = _argv("cw-merge-42@host", 20)
    assert argv[0] == "worker"
    assert argv[argv.index("-n") + 1] == "cw-merge-42-control@host"
    assert argv[argv.index("-Q") + 1] == defaults.CONTROL_QUEUE
    assert argv[argv.index("-P") + 1] == "threads"
    assert argv[argv.index("-c") + 1] == "1"
    assert argv[argv.index("--loglevel") + 1] == "INFO"


def test_a_forked_worker_serves_the_queue_it_was_forked_for_not_its_command_lines() -> None:
    me = psutil.Process()
    assert not serves(me, defaults.CONTROL_QUEUE)  # pytest's command line names no queue
    forked[os.getpid()] = defaults.CONTROL_QUEUE
    try:
        assert serves(me, defaults.CONTROL_QUEUE)
        assert not serves(me, defaults.MERGE_QUEUE)
    finally:
        del forked[os.getpid()]


def test_the_control_worker_is_not_forked_beside_another_thread() -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="late-starter")
    other.start()
    forked[os.getpid()] = defaults.MERGE_QUEUE  # this process reads as a merge worker
    try:
        with pytest.raises(CwError, match=r"threads already run .*late-starter"):
            fork_control_worker()
        assert list(forked) == [os.getpid()], "nothing was forked"
    finally:
        del forked[os.getpid()]
        release.set()
        other.join()
