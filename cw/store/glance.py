"""A look at one row without SQLAlchemy, for a command that may answer before it needs the store.

Importing SQLAlchemy and the store takes longer than a re-submit that finds nothing new needs
in all (cw/plans/receipt.py): this module reads what such an answer rests on through the
standard library's ``sqlite3``: one SELECT, on a file that must exist. Any other database, or
anything unexpected, answers None, and the command takes its usual path through the store.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from cw import defaults

_PLAIN_SQLITE = "sqlite:///"  # SQLAlchemy's form of a SQLite file, with no options after it


def revision(db_url: str, initiative_id: int, name: str) -> int | None:
    """The initiative's revision (+1 by every submit that changes it); None if it is not there
    under this id and name, or the database is not a plain SQLite file."""
    path = _sqlite_file(db_url)
    if path is None:
        return None
    try:
        connection = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=rw",  # rw, not rwc: never creates it
            uri=True,
            timeout=defaults.SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        with closing(connection):
            row = connection.execute(
                "SELECT revision FROM initiatives WHERE id = ? AND name = ?",
                (initiative_id, name),
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def _sqlite_file(db_url: str) -> Path | None:
    rest = db_url.removeprefix(_PLAIN_SQLITE)
    if rest == db_url or not rest or "?" in rest or rest == ":memory:":
        return None
    return Path(rest)
