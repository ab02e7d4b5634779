"""workers/sharing.py: a worker's main process freezes what it holds before its pool forks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import signals

import workers.sharing  # noqa: F401  (connects its handler)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_worker_s_start_moves_what_it_loaded_out_of_the_collector_s_reach(
    unfrozen: None,
) -> None:
    assert gc.get_freeze_count() == 0
    held = [object() for _ in range(10)]  # what the main process loaded before the fork
    signals.worker_init.send(sender=None)  # connected when the worker loads workers.sharing
    assert gc.get_freeze_count() >= len(held)
