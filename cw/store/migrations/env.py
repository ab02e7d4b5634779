"""Alembic environment: the engine comes from cw.db, never from an ini file."""

from __future__ import annotations

from alembic import context

from cw.store import db
from cw.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    # Several `cw init` at once on one PostgreSQL database: one migrates, the others wait here
    # and then find the schema current (Alembic reads the version after this lock).
    db.serialize(connection, "migrate")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        transactional_ddl=True,
    )
    context.run_migrations()
