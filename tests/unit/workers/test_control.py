"""workers/control.py: the control worker is named after its merge worker and known by pid."""

from __future__ import annotations

import os

import psutil

from cw import defaults
from workers import forked, serves
from workers.control import _argv


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
