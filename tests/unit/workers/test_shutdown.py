"""workers/shutdown.py: a worker's shutdown interrupts its agents, and only where it runs any."""

from __future__ import annotations

import pytest

import workers
from workers import shutdown


def test_a_worker_without_its_store_yet_has_no_attempt_to_interrupt_and_makes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A merge worker (which never makes its store in its main process) or an agent worker
    stopped while starting: the handler of SIGTERM made the store, importing the database
    driver on top of the import the signal interrupted, and failed with a traceback."""
    monkeypatch.setattr(workers, "_runtime", {})

    def made(*_args: object, **_kw: object) -> None:
        raise AssertionError("the store was made in the signal's handler")

    monkeypatch.setattr(shutdown, "runtime", made)
    monkeypatch.setattr(shutdown, "interrupt_attempts", made)
    shutdown.interrupt_agents(sender="cw-merge-1@host")
