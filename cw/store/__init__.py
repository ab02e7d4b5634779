"""The database: the schema, its migrations and every read and write, behind :class:`Store`.

SQLite (or PostgreSQL on several hosts) is the truth; each change is a short transaction
through one of :class:`Store`'s intent-named methods. The names below load on first use, so
:mod:`cw.store.glance` (a look at one row without SQLAlchemy) costs no more than itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cw.store.db import TransientDatabaseError
    from cw.store.records import (
        MACHINERY_RETRIES,
        Answer,
        AttemptResult,
        Claim,
        MergeJob,
        MergeReport,
        Question,
        TaskBrief,
        Workspace,
    )
    from cw.store.store import Store

__all__ = [
    "MACHINERY_RETRIES",
    "Answer",
    "AttemptResult",
    "Claim",
    "MergeJob",
    "MergeReport",
    "Question",
    "Store",
    "TaskBrief",
    "TransientDatabaseError",
    "Workspace",
]


#: Where the names above that :mod:`cw.store.records` does not hold live.
_HOMES = {"Store": "cw.store.store", "TransientDatabaseError": "cw.store.db"}


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'cw.store' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES.get(name, "cw.store.records")), name)
