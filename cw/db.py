"""Engines and migrations. SQLite runs in WAL mode, with a busy timeout and BEGIN IMMEDIATE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text

from cw import defaults

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration; a unit test checks it is Alembic's head.
SCHEMA_REVISION = "0003"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, every write transaction is ``BEGIN IMMEDIATE``."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": defaults.SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


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
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


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
