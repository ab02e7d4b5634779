"""The read side: every row a reader gets, as frozen dataclasses.

The CLI (``cw status``, ``cw task list`` and ``show``, ``cw agent list``, ``cw merge status``),
``cw gc`` and ``cw doctor``, the file-system UI and the server read these types; ``--json``
output is their fields, encoded at the edge. Rows come from
:class:`~cw.store.snapshot.Snapshot` (bulk reads for the mirror) and from the reads of
:class:`~cw.store.Store` (listings, and records: a stored row's every column);
:mod:`cw.store.views` and :func:`cw.maintenance.merges.merge_status` compose them into what a
command shows.

One module per kind of reader: ``listings`` (the list and show commands), ``stored`` (a stored
row's every column: ``cw task show``, maintenance), ``status`` (``cw status``, ``cw merge
status``), ``mirror`` (the file-system UI); ``row`` holds their base. Import them from here.
"""

from __future__ import annotations

from cw.store.read.listings import (
    AgentListing,
    AgentView,
    Budget,
    MessageDetail,
    MessageListing,
    Pause,
    PlanDetail,
    PlanListing,
    PlanTask,
    ReplacedVersion,
    ReviewListing,
    TaskListing,
    plan_state,
)
from cw.store.read.mirror import (
    AgentRow,
    MessageRow,
    Overview,
    PlanProgress,
    TaskRow,
    plan_progress,
)
from cw.store.read.row import Row, seconds, short_count
from cw.store.read.status import (
    Attention,
    Blocked,
    Bounce,
    Conflict,
    Failure,
    InProgress,
    Merged,
    MergeStatus,
    PlanSummary,
    Queued,
    QueueEntry,
    Status,
)
from cw.store.read.stored import (
    AttemptRecord,
    EventRow,
    MergeRecord,
    MergeRow,
    MessageRecord,
    TaskDetail,
    TaskFootprint,
)

__all__ = [
    "AgentListing",
    "AgentRow",
    "AgentView",
    "AttemptRecord",
    "Attention",
    "Blocked",
    "Bounce",
    "Budget",
    "Conflict",
    "EventRow",
    "Failure",
    "InProgress",
    "MergeRecord",
    "MergeRow",
    "MergeStatus",
    "Merged",
    "MessageDetail",
    "MessageListing",
    "MessageRecord",
    "MessageRow",
    "Overview",
    "Pause",
    "PlanDetail",
    "PlanListing",
    "PlanProgress",
    "PlanSummary",
    "PlanTask",
    "QueueEntry",
    "Queued",
    "ReplacedVersion",
    "ReviewListing",
    "Row",
    "Status",
    "TaskDetail",
    "TaskFootprint",
    "TaskListing",
    "TaskRow",
    "plan_progress",
    "plan_state",
    "seconds",
    "short_count",
]
