"""Fault injection: a private Redis that may be flushed or restarted; the shared district."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import district as district  # the fixture, shared
from tests.redis_server import RedisServer


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, to flush or restart (the session's is shared)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer.launch(workdir)
    yield server
    server.stop()
