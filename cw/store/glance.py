"""Reads of a SQLite district without SQLAlchemy, for commands that need nothing else.

Importing SQLAlchemy and the store takes several times as long as ``cw --version``: longer
than a re-submit that finds nothing new needs in all (cw/plans/receipt.py), and most of what a
listing (``cw status``, ``cw task list``, ``cw agent list``) takes. This module opens such a
district through the standard library's ``sqlite3``: :func:`revision` reads one row,
:class:`cw.store.selects.Glance` the listings. Only a plain SQLite file that exists
qualifies; any other database, or anything unexpected, answers None, and the command takes
its usual path through the store.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from cw import defaults

#: The newest migration; a unit test checks it is Alembic's head.
SCHEMA_REVISION = "0009"

_PLAIN_SQLITE = "sqlite:///"  # SQLAlchemy's form of a SQLite file, with no options after it


def revision(db_url: str, initiative_id: int, name: str) -> int | None:
    """The initiative's revision (+1 by every submit that changes it); None if it is not there
    under this id and name, or the database is not a plain SQLite file."""
    connection = connect(db_url)
    if connection is None:
        return None
    try:
        with closing(connection):
            row = connection.execute(
                "SELECT revision FROM initiatives WHERE id = ? AND name = ?",
                (initiative_id, name),
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def connect(db_url: str) -> sqlite3.Connection | None:
    """A connection to the SQLite file ``db_url`` names, if it is one and exists."""
    rest = db_url.removeprefix(_PLAIN_SQLITE)
    if rest == db_url or not rest or "?" in rest or rest == ":memory:":
        return None
    try:
        return sqlite3.connect(
            f"{Path(rest).absolute().as_uri()}?mode=rw",  # rw, not rwc: never creates it
            uri=True,
            timeout=defaults.SQLITE_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,  # transactions as this module says, not the driver's guess
        )
    except sqlite3.Error:
        return None
