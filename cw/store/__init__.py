"""The database: the schema, its migrations and every read and write, behind :class:`Store`.

SQLite (or PostgreSQL on several hosts) is the truth; each change is a short transaction
through one of :class:`Store`'s intent-named methods.
"""

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
