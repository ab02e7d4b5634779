"""The store of each test: a fresh database (SQLite file, or PostgreSQL), closed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cw.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store.open(database_url)
    yield s
    s.close()
