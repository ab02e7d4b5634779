"""The migrations' columns, written compactly: ``"name type, name type!, ..."``.

A type is ``int``, ``float``, ``text``, ``json``, ``bool`` or ``strN`` (a String of length N);
``!`` after it: NOT NULL; ``=V`` after that: the server default V. Each builds the very
``sa.Column`` Alembic's autogenerate writes (``sa.Column("at", sa.Float(), nullable=False)``),
so a migration written with these emits the same DDL as one written out column by column.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "int": sa.Integer,
    "float": sa.Float,
    "text": sa.Text,
    "json": sa.JSON,
    "bool": sa.Boolean,
}


def columns(spec: str) -> list[sa.Column[Any]]:
    """The columns ``spec`` names, in its order."""
    return [_column(*item.split()) for item in spec.split(",")]


def _column(name: str, kind: str) -> sa.Column[Any]:
    kind, _, default = kind.partition("=")
    required = kind.endswith("!")
    kind = kind.removesuffix("!")
    if kind.startswith("str"):
        column_type: sa.types.TypeEngine[Any] = sa.String(length=int(kind[3:]))
    else:
        column_type = TYPES[kind]()
    if default:
        return sa.Column(name, column_type, nullable=not required, server_default=default)
    return sa.Column(name, column_type, nullable=not required)


def add_columns(table: str, spec: str) -> None:
    """Add the columns ``spec`` names to ``table``, in one batch."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        for column in columns(spec):
            batch_op.add_column(column)


def drop_columns(table: str, *names: str) -> None:
    """Drop ``names`` from ``table``, in that order, in one batch."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        for name in names:
            batch_op.drop_column(name)
