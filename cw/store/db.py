"""Engines, migrations and cross-process locks.

SQLite runs in WAL mode, with a busy timeout and BEGIN IMMEDIATE: one writer at a time.
PostgreSQL runs at READ COMMITTED; the few read-then-write paths of the store take row locks
or a transaction-level advisory lock (:func:`serialize`) instead.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cw import defaults
from cw.errors import ConfigError
from cw.store.glance import SCHEMA_REVISION

#: What the database raises for trouble that passes: a deadlock, a serialization failure, a lock
#: held too long, a dropped connection. Trying the same work again is the answer, not failing it.
TransientDatabaseError = OperationalError

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, every write transaction is ``BEGIN IMMEDIATE``."""
    if is_postgres(url):
        return _postgres_engine(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": defaults.SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres:"))


def _postgres_engine(url: str) -> Engine:
    """psycopg 3 at READ COMMITTED: a compare-and-set UPDATE re-checks its WHERE on the row's
    newest version, so two claimers of one task never both win; see :func:`serialize`."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "postgresql+psycopg" and importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            "CW_DATABASE_URL is a PostgreSQL URL but the psycopg driver is not installed: "
            "pip install 'codewalk-district[postgres]'"
        )
    return create_engine(parsed, pool_pre_ping=True, isolation_level="READ COMMITTED")


def reading(engine: Engine) -> Engine:
    """``engine`` for read-only transactions: each sees one snapshot of the database from its
    first statement to its end. SQLite's read transactions do in WAL mode; PostgreSQL's do at
    REPEATABLE READ (at READ COMMITTED each statement would see what committed before it, so a
    read of tasks and then of their edges could meet a submit in between)."""
    options: dict[str, object] = {"cw_readonly": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    return engine.execution_options(**options)


def serialize(s: Session | Connection, name: str) -> None:
    """Hold the lock ``name`` until this transaction ends (PostgreSQL only: on SQLite every
    write transaction already holds the one write lock)."""
    dialect = s.get_bind().dialect if isinstance(s, Session) else s.dialect
    if dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


def lock_key(name: str) -> int:
    """A stable advisory lock key for ``name`` (the same in every process)."""
    return zlib.crc32(f"cw.{name}".encode())


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module so "begin" below decides the lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={defaults.SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Readers ask for a plain BEGIN; everything else takes the write lock up front, so two
    # writers never deadlock upgrading a shared lock.
    readonly = conn.get_execution_options().get("cw_readonly", False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    with _first_connection(engine) as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _why_not(path: str | None) -> str:
    """Why SQLite could not open (or make) the file at ``path``, as far as one can tell."""
    folder = Path(path or ".").parent
    if not folder.is_dir():
        return f"its folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"its folder {folder} is not writable (SQLite writes its journal there)"
    return "it cannot be read or written (permissions?)"


@contextmanager
def _first_connection(engine: Engine) -> Iterator[Connection]:
    """A connection; a database server that cannot be reached is one clear line, not a trace."""
    try:
        conn = engine.connect()
    except OperationalError as exc:
        if engine.dialect.name == "sqlite":
            if "unable to open database file" not in str(exc.orig):
                raise
            path = engine.url.database
            raise ConfigError(f"cannot open the SQLite database {path}: {_why_not(path)}") from exc
        where = engine.url.render_as_string(hide_password=True)
        why = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(
            f"CW_DATABASE_URL: cannot reach the database {where}: {why}; is the server up?"
        ) from exc
    with conn:
        yield conn


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    if schema_revision(engine) == SCHEMA_REVISION:
        return
    # Alembic takes ~250 ms to import: load it only when the schema has to change.
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def alembic_config(engine: Engine) -> Any:
    """Alembic's configuration for ``engine``: scripts from the package, no ini file."""
    from alembic.config import Config  # see migrate()

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config
