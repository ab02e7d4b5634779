"""Alembic environment: the engine comes from cw.db, never from an ini file."""

from __future__ import annotations

from alembic import context

from cw.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        transactional_ddl=True,
    )
    context.run_migrations()
